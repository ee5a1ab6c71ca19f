#!/usr/bin/env python
"""Write the vega-embed JavaScript bundle (vega, vega-lite, vega-embed; from vl-convert, matching
altair's Vega-Lite version) that every figure page inlines, so the pages work offline.

Standalone:
    python scripts/vega_bundle.py --output results/figures/vega-embed.js
"""

from pathlib import Path

from rim import cli
from rim.figures import vega_bundle
from rim.provenance import atomic_path


def run(job: cli.Job) -> None:
    bundle = vega_bundle()
    with atomic_path(job.output[0]) as tmp:
        Path(tmp).write_text(bundle, encoding="utf-8")
    cli.log.info("vega-embed bundle: %d characters", len(bundle))


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--output", required=True, help="JavaScript file to write")
    args = parser.parse_args(argv)
    return cli.Job(input={}, output={0: args.output}, threads=args.threads, log_path=args.log)


if __name__ == "__main__":
    cli.main(run, build_job, globals())
