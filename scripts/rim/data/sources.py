"""Read a dataset from where its config entry says, into a frame with our column names.

``source`` is one of
- ``embedded:<name>``: a file shipped in ``resources/prompts/`` (written for this project);
- ``generator:<name>``: a math generator of ``rim.data.math_generators``;
- ``hf:<dataset id>``: a Hugging Face dataset, loaded with ``datasets.load_dataset``
  (``hf_config``, ``hf_split``, ``revision`` in the entry);
- a path to a local ``.csv``, ``.jsonl``/``.json``, ``.parquet`` or ``.txt`` file (one prompt
  per line), also loaded with ``datasets``.

``columns`` maps our column names to the source's (``{prompt: instruction}``); unmapped names
are looked up as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from typing import TYPE_CHECKING

from rim.errors import DataError

if TYPE_CHECKING:  # pandas loads with the first table read: the Snakefile uses this module's paths
    import pandas as pd

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parents[3] / "resources" / "prompts"
LOCAL_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}


def workdir_relative(path: str | Path, workdir: str | Path | None = None) -> str:
    """A path as a rule declares it: relative to the working directory when it lies inside it,
    so that a run copied or moved elsewhere (with the workflow inside it) plans nothing new;
    anything else (a user's own file elsewhere) stays as given."""
    path = Path(path)
    base = Path(workdir or Path.cwd()).resolve()
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)


def describe_source(entry: Mapping) -> str:
    """The file or dataset a message should name."""
    source = entry["source"]
    if source.startswith("embedded:"):
        return str(RESOURCES / f"{source.split(':', 1)[1]}.csv")
    return source


def refusals_path(source: str) -> Path:
    """``embedded:<name>`` -> resources/prompts/<name>.txt; anything else is a file path."""
    if source.startswith("embedded:"):
        return RESOURCES / f"{source.split(':', 1)[1]}.txt"
    return Path(source).expanduser()


def _read_embedded(name: str) -> pd.DataFrame:
    import pandas as pd

    path = RESOURCES / f"{name}.csv"
    if not path.exists():
        known = sorted(p.stem for p in RESOURCES.glob("*.csv"))
        raise DataError(f"embedded dataset '{name}' does not exist; known: {', '.join(known)}", source=str(path))
    # keep_default_na=False: an empty cell stays an empty string, which validation then reports.
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _read_with_datasets(entry: Mapping) -> pd.DataFrame:
    import datasets

    source = entry["source"]
    if source.startswith("hf:"):
        dataset_id = source.split(":", 1)[1]
        try:
            loaded = datasets.load_dataset(
                dataset_id, entry.get("hf_config"), split=entry.get("hf_split", "train"), revision=entry.get("revision")
            )
        except Exception as error:  # datasets raises many types for an unreachable hub
            raise DataError(
                f"could not load Hugging Face dataset '{dataset_id}' (is the hub reachable, or the dataset "
                f"in the local cache? use a local file as 'source' otherwise): {error}",
                source=source,
            ) from None
        return loaded.to_pandas()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError("file does not exist", source=str(path))
    kind = LOCAL_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"unsupported file type '{path.suffix}'; use one of {', '.join(LOCAL_FORMATS)}", source=str(path)
        )
    try:
        loaded = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as error:
        raise DataError(f"could not be read as {kind}: {error}", source=str(path)) from None
    frame = loaded.to_pandas()
    if kind == "text":
        frame = frame.rename(columns={"text": "prompt"})
    return frame


def read_source(entry: Mapping) -> pd.DataFrame:
    """The raw rows of a dataset entry, before column mapping (generators excluded)."""
    source = entry["source"]
    if source.startswith("embedded:"):
        return _read_embedded(source.split(":", 1)[1])
    return _read_with_datasets(entry)


def map_columns(frame: pd.DataFrame, entry: Mapping, required: list[str], optional: list[str]) -> pd.DataFrame:
    """Rename source columns to ours; a missing required column names the file and the columns it has."""
    import pandas as pd

    mapping = dict(entry.get("columns") or {})
    out = pd.DataFrame(index=frame.index)
    for name in required + optional:
        column = mapping.get(name, name)
        if column in frame.columns:
            out[name] = frame[column]
        elif name in required:
            hint = f" (mapped from '{column}')" if name in mapping else ""
            raise DataError(
                f"missing column '{column}'{hint}; the file has: {', '.join(map(str, frame.columns))}. "
                f"Map it in the config with datasets.<name>.columns.{name}",
                source=describe_source(entry),
            )
        elif name in mapping:
            raise DataError(
                f"column '{column}' named in columns.{name} does not exist; the file has: "
                f"{', '.join(map(str, frame.columns))}",
                source=describe_source(entry),
            )
    return out.reset_index(drop=True)
