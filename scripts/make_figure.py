#!/usr/bin/env python
"""Draw one figure of the paper's analyses (docs/method.md#7-figures) from the workflow's tidy tables.

Writes results/figures/<figure>.html (interactive, works offline), the static image beside it
(.png or .svg, figures.format) and <figure>.csv, the numbers the figure plots. The figure's
settings are its block under `figures` in the config (rim.figures.figure_settings); its tables
are the parquet files of the stages it reads (rim.figures: which figure reads what).

Standalone:
    python scripts/make_figure.py --figure thinking --table summary=results/eval/summary.parquet \\
        --output /tmp/thinking.html
    python scripts/make_figure.py --figure refusal_heads \\
        --table refusal_heads=results/heads/smollm2/base/refusal_heads.parquet --output /tmp/heads.html
A table given several times (e.g. one per checkpoint) is concatenated.
"""

from pathlib import Path

from rim import cli
from rim.figures import FIGURES, FigureError, build, figure_settings, read_tables, save
from rim.provenance import atomic_path


def _paths(value) -> list[str]:
    return [str(value)] if isinstance(value, (str, Path)) else [str(path) for path in value]


def run(job: cli.Job) -> None:
    name, settings = job.params["figure"], dict(job.params["settings"])
    spec = FIGURES[name]
    sources = {table: _paths(job.input[table]) for table in spec.tables}
    tables = {table: read_tables(paths) for table, paths in sources.items()}
    cli.log.info(
        "figure %s from %s",
        name,
        ", ".join(f"{t} ({len(p)} file{'s' * (len(p) > 1)}, {len(tables[t])} rows)" for t, p in sources.items()),
    )
    try:
        frame, chart = build(name, tables, settings)
    except FigureError as error:
        if error.table in sources:
            paths = sources[error.table]
            raise FigureError(
                str(error), source=paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"
            ) from None
        raise
    bundle = Path(job.input["bundle"]).read_text(encoding="utf-8") if "bundle" in job.input else None
    save(
        chart,
        html=job.output["html"],
        static=job.output["static"],
        bundle=bundle,
        scale=float(settings.get("scale", 2)),
    )
    with atomic_path(job.output["data"]) as tmp:
        frame.to_csv(tmp, index=False)
    cli.log.info("%s: %d plotted rows -> %s, %s", name, len(frame), job.output["html"], job.output["static"])


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--figure", required=True, choices=sorted(FIGURES), help="which figure")
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an input table of the figure (repeat; a name given twice is concatenated)",
    )
    parser.add_argument("--bundle", default=None, help="vega-embed JavaScript to inline (default: from vl-convert)")
    parser.add_argument("--output", required=True, help="the HTML page to write; the image and the CSV go beside it")
    args = parser.parse_args(argv)
    tables: dict[str, list[str]] = {}
    for item in args.table:
        table, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--table {item!r}: give NAME=PATH")
        tables.setdefault(table, []).append(path)
    needed = FIGURES[args.figure].tables
    missing = [table for table in needed if table not in tables]
    if missing:
        parser.error(f"figure {args.figure} needs --table for: {', '.join(missing)}")
    settings = figure_settings(load_config(args.config), args.figure)
    html = Path(args.output)
    return cli.Job(
        input={**tables, **({"bundle": args.bundle} if args.bundle else {})},
        output={
            "html": str(html),
            "static": str(html.with_suffix("." + settings.get("format", "png"))),
            "data": str(html.with_suffix(".csv")),
        },
        params={"figure": args.figure, "settings": settings},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
