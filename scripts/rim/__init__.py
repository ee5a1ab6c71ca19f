"""Science package of the RIM workflow.

Reproduces "When Thinking Backfires: Mechanistic Insights into Reasoning-induced
Misalignment" (Yan et al., ICLR 2026) on any Hugging Face causal LM. The step scripts in
``scripts/`` are thin command-line wrappers around this package; everything here can be
imported and tested without Snakemake.
"""

__version__ = "0.1.0"
