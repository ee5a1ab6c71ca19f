"""Science package of the RIM workflow.

Reproduces "When Thinking Backfires: Mechanistic Insights into Reasoning-induced
Misalignment" (Yan et al., ICLR 2026) on any Hugging Face causal LM. The step scripts in
``scripts/`` are thin command-line wrappers around this package; everything here can be
imported and tested without Snakemake.
"""

__version__ = "0.1.0"

import signal as _signal
import sys as _sys


def _is_snakemake_job() -> bool:
    """Whether this process runs a step script for Snakemake (its ``script:`` preamble has put a
    ``snakemake`` object into ``__main__``), not Snakemake itself or a standalone run."""
    containers = _sys.modules.get("snakemake.iocontainers")
    main_module = _sys.modules.get("__main__")
    return containers is not None and isinstance(getattr(main_module, "snakemake", None), containers.Snakemake)


def _end_on_interrupt() -> None:
    """Let Ctrl-C end a Snakemake job at once, as SIGTERM does.

    On Ctrl-C Snakemake waits for its local jobs to exit (they get the same SIGINT), then marks
    their outputs incomplete. Python turns SIGINT into an exception, raised only when the main
    thread runs Python code again and lost to any library that catches BaseException: such a job
    would hold Snakemake until it finished (tests/test_interruption.py). Nothing a job writes
    needs cleanup at exit: outputs are renamed into place when complete, the trainer saves its
    state as it goes. Set on import of this package, before a step script's heavy imports; a
    SIGINT its launcher ignores stays ignored, and standalone runs keep KeyboardInterrupt.
    """
    if _is_snakemake_job() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)


_end_on_interrupt()
