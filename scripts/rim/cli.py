"""What every step script shares: logging to the rule's log file, threads, progress output.

A step script is usable two ways with the same code path:
- from Snakemake (``script:`` directive), where ``snakemake`` carries input, output, params,
  wildcards, threads and log;
- from the command line, where argparse builds the same ``Job`` from a config file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from rim.errors import RimError

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("rim")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@dataclass
class Job:
    """The inputs, outputs and settings of one job, whoever launched it (Snakemake or argv)."""

    input: Mapping[str, Any]
    output: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    wildcards: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1
    log_path: str | None = None
    name: str = field(default_factory=lambda: Path(sys.argv[0]).stem)

    @classmethod
    def from_snakemake(cls, snakemake) -> "Job":
        def named(items) -> dict:
            mapping = dict(items.items())
            # Unnamed entries stay reachable by position.
            for index, value in enumerate(items):
                mapping.setdefault(index, value)
            return mapping

        # GPUs are a job resource, not a parameter: the model loader reads them from the
        # environment (rim.models.loading.GPUS_VARIABLE), so that placement never reruns a job.
        resources = getattr(snakemake, "resources", None)
        gpus = resources.get("gpu") if resources is not None else None
        if gpus:
            os.environ["RIM_GPUS"] = str(int(gpus))
        return cls(
            input=named(snakemake.input),
            output=named(snakemake.output),
            params=dict(snakemake.params.items()),
            wildcards=dict(snakemake.wildcards.items()),
            threads=int(snakemake.threads),
            log_path=str(snakemake.log[0]) if len(snakemake.log) else None,
            name=f"rule {snakemake.rule}",
        )


def _quiet_libraries() -> None:
    """Progress bars of HF libraries fill log files with carriage returns: keep ours only.

    Through the environment, read when a library is first imported, so that a job that never
    uses transformers or datasets does not import them (~1.5 s); a library already imported is
    told directly.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


def set_threads(threads: int) -> None:
    """Give torch exactly the cores Snakemake granted the job (2 jobs on 2 cores: 1 each).

    torch reads OMP_NUM_THREADS when it is first imported: a job that imports it later (or never)
    gets the same count without paying for the import here.
    """
    count = str(max(1, int(threads)))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = count
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(count))


def run_job(job: Job, func: Callable[[Job], Any]) -> Any:
    """Run one job with logging and a clean, readable failure."""
    setup_logging(job.log_path)
    _quiet_libraries()
    set_threads(job.threads)
    started = time.perf_counter()
    log.info("start %s (threads=%d, wildcards=%s)", job.name, job.threads, dict(job.wildcards))
    try:
        result = func(job)
    except RimError as error:
        log.error("%s", error)
        raise SystemExit(f"error: {error}") from None
    except Exception:
        log.error("unexpected failure:\n%s", traceback.format_exc())
        raise
    log.info("done in %.1f s", time.perf_counter() - started)
    return result


def main(func: Callable[[Job], Any], build_job: Callable[[list[str] | None], Job], namespace: Mapping) -> Any:
    """Entry point of a step script: Snakemake's ``snakemake`` object if present, else argv."""
    if "snakemake" in namespace:
        return run_job(Job.from_snakemake(namespace["snakemake"]), func)
    return run_job(build_job(None), func)


class Progress:
    """Log ``done/total`` with rate and ETA at most every ``every`` seconds (log-file friendly)."""

    def __init__(self, total: int, what: str, unit: str = "items", every: float = 10.0):
        self.total, self.what, self.unit, self.every = total, what, unit, every
        self.done = 0
        self.started = self.last = time.perf_counter()

    def update(self, count: int = 1, **extra: Any) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            elapsed = now - self.started
            rate = self.done / elapsed if elapsed > 0 else float("nan")
            eta = (self.total - self.done) / rate if rate and rate == rate and rate > 0 else float("nan")
            details = "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v}" for k, v in extra.items())
            log.info(
                "%s: %d/%d %s (%.0f%%), %.1f %s/s, elapsed %.0fs, eta %.0fs%s",
                self.what,
                self.done,
                self.total,
                self.unit,
                100 * self.done / max(self.total, 1),
                rate,
                self.unit,
                elapsed,
                eta,
                details,
            )


def standalone_parser(doc: str | None) -> "argparse.ArgumentParser":
    """The arguments every step script takes when run without Snakemake."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml", help="workflow config file (validated)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for torch")
    parser.add_argument("--log", default=None, help="also write the log to this file")
    return parser


def config_entry(config: Mapping, block: str, name: str) -> Any:
    """``config[block][name]``, or an error listing the names that exist."""
    from rim.errors import ConfigError

    entries = config.get(block, {})
    if name not in entries:
        raise ConfigError(f"'{name}' is not defined under '{block}' in the config; defined: {', '.join(entries)}")
    return entries[name]
