"""Provenance of every output, and atomic writes and checked reads of tables and JSON files.

Every table the workflow writes carries, in its parquet metadata under ``rim.provenance``, the
config block that produced it, the seed, the library versions and the git revision of the
workflow. HDF5 files carry the same record as attributes (see ``rim.activations``).

``read_table``, ``read_json`` and ``read_provenance`` read results back: a missing, truncated or
corrupt file raises ``rim.errors.DataError`` naming the file and how to rebuild it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rim.errors import DataError

PROVENANCE_KEY = b"rim.provenance"
WORKFLOW_ROOT = Path(__file__).resolve().parents[2]
TRACKED_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "h5py",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "snakemake",
)


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# Variables that would point git at another repository than the one holding ``root``.
_GIT_LOCATION_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


def git_revision(root: str | Path = WORKFLOW_ROOT) -> str:
    """The commit of the git checkout whose top folder is ``root``, with ``-dirty`` when tracked
    files differ; ``unknown`` when ``root`` is no checkout (a release tarball, a copied folder,
    even one inside another repository) or git is not installed. Cached per folder."""
    return _git_revision(str(Path(root).resolve()))


@functools.lru_cache(maxsize=None)
def _git_revision(root: str) -> str:
    env = {key: value for key, value in os.environ.items() if key not in _GIT_LOCATION_VARIABLES}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            env=env,
        ).stdout.strip()

    try:
        # A folder inside an unrelated repository: that repository's commit is not this one's.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(root):
            return "unknown"
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # not a checkout, no commit yet, git missing
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _jsonable(value: Any) -> Any:
    """Config blocks from Snakemake may hold Namedlist/Path objects: store them as JSON."""
    return json.loads(json.dumps(value, default=str))


def collect(config: Mapping | None = None, *, seed: int | None = None, **extra: Any) -> dict:
    """The provenance record stored with an output."""
    record = {
        "config": _jsonable(config or {}),
        "seed": seed,
        "versions": library_versions(),
        "git_revision": git_revision(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(_jsonable(extra))
    return record


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and rename it into place only on success.

    A killed or failed writer leaves no file under the final name that could pass for a
    complete result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{suffix or path.suffix}.tmp"
    # Created like any plain file (0o666 less the umask): results are shared files, and
    # mkstemp would leave them readable by their owner alone.
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_table(frame: pd.DataFrame, path: str | Path, provenance: Mapping) -> Path:
    """Write a tidy table to parquet with its provenance in the file metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PROVENANCE_KEY] = json.dumps(_jsonable(provenance)).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def rebuild_advice(path: str | Path) -> str:
    return f"rebuild it with `snakemake --force {path}`, or delete it and rerun the same command"


def unreadable(path: str | Path, error: BaseException, what: str = "result file") -> DataError:
    """The error for a result file that exists but cannot be read (truncated, corrupt)."""
    detail = (str(error).strip().splitlines() or [""])[0]
    detail = re.sub(r"^Could not open Parquet input source '.*?': ", "", detail)
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return DataError(
        f"unreadable or incomplete {what} ({type(error).__name__}: {detail}); {rebuild_advice(path)}", source=str(path)
    )


def _require(path: str | Path, what: str) -> None:
    if not Path(path).exists():
        raise DataError(f"{what} does not exist (run the step that writes it first)", source=str(path))


def read_table(path: str | Path, *, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet table the workflow wrote (``columns``: only these); ``DataError`` when missing,
    unreadable or lacking a requested column."""
    _require(path, "result table")
    try:
        if columns is not None:
            missing = [column for column in columns if column not in pq.read_schema(path).names]
            if missing:
                raise DataError(f"table has no columns {missing}", source=str(path))
        return pd.read_parquet(path, columns=columns, engine="pyarrow")
    except (pa.ArrowException, OSError) as error:
        raise unreadable(path, error, "parquet table") from None


def read_provenance(path: str | Path) -> dict:
    """The provenance record of a parquet file written by ``write_table``."""
    _require(path, "result table")
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as error:
        raise unreadable(path, error, "parquet table") from None
    if PROVENANCE_KEY not in metadata:
        raise KeyError(f"{path} carries no {PROVENANCE_KEY.decode()} metadata")
    return json.loads(metadata[PROVENANCE_KEY])


def write_json(data: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)


def read_json(path: str | Path) -> Any:
    """A JSON file the workflow wrote; ``DataError`` when missing, truncated or not JSON."""
    _require(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise unreadable(path, error, "JSON file") from None
