"""Prepare one dataset into a tidy parquet table under ``results/data/`` (docs/method.md#2-data).

Two kinds of dataset, each with a fixed schema (documented in ``config/README.md``):

prompts  ``prompt_id, prompt, category, split, dataset`` and, where the source has them,
         ``lookalike`` (harmless prompts phrased like harmful ones), ``response`` (a reference
         answer), ``base_prompt_id`` and ``intent`` (for the malicious-intent "-MI" set).
math     ``problem_id, question, reasoning, final, answer, split, dataset``; ``answer`` is a
         normalised number, ``final`` is ``#### <answer>``.

``split`` is ``train`` or ``eval``, assigned deterministically from ``split_seed`` (stratified by
category for prompt sets), so training and evaluation prompts never overlap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from rim.data.sources import describe_source, map_columns, read_source
from rim.errors import DataError
from rim.provenance import read_table

log = logging.getLogger(__name__)

PROMPT_COLUMNS = ["prompt_id", "prompt", "category", "split", "dataset"]
MATH_COLUMNS = ["problem_id", "question", "reasoning", "final", "answer", "split", "dataset"]
_FINAL_MARK = "####"


def _normalize_number(text: str) -> str:
    from rim.data.math_generators import normalize_number

    return normalize_number(text)


def _row(index: int) -> int:
    """1-based data row as a user counts it in the file (header excluded)."""
    return int(index) + 1


def _check_text_column(frame: pd.DataFrame, column: str, source: str) -> None:
    values = frame[column]
    for index, value in values.items():
        if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
            raise DataError(f"empty {column}", source=source, row=_row(index))
    normalized = values.astype(str).str.strip()
    duplicated = normalized[normalized.duplicated(keep=False)]
    if len(duplicated):
        first_value = duplicated.iloc[0]
        rows = [_row(i) for i in duplicated.index[duplicated == first_value]]
        raise DataError(
            f"duplicate {column} in rows {', '.join(map(str, rows))}: {first_value[:80]!r}",
            source=source,
            row=rows[-1],
        )


def assign_split(frame: pd.DataFrame, eval_fraction: float, seed: int, stratify: str | None = None) -> pd.Series:
    """``train``/``eval`` per row, from a seeded permutation (per stratum when given)."""
    split = pd.Series("train", index=frame.index, dtype=object)
    groups = frame.groupby(stratify, sort=True).groups if stratify else {None: frame.index}
    rng = np.random.default_rng(seed)
    for _, index in sorted(groups.items(), key=lambda item: str(item[0])):
        index = np.array(sorted(index))
        n_eval = int(round(len(index) * eval_fraction))
        chosen = rng.permutation(index)[:n_eval]
        split.loc[chosen] = "eval"
    return split


def _subsample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or limit >= len(frame):
        return frame
    keep = np.sort(np.random.default_rng(seed).permutation(len(frame))[:limit])
    return frame.iloc[keep].reset_index(drop=True)


def prepare_prompts(name: str, entry: Mapping) -> pd.DataFrame:
    source = describe_source(entry)
    raw = read_source(entry)
    frame = map_columns(raw, entry, required=["prompt"], optional=["prompt_id", "category", "lookalike", "response"])
    _check_text_column(frame, "prompt", source)
    if "prompt_id" not in frame:
        frame["prompt_id"] = [f"{name}-{i + 1:05d}" for i in range(len(frame))]
    frame["prompt_id"] = frame["prompt_id"].astype(str)
    _check_text_column(frame, "prompt_id", source)
    frame["category"] = frame["category"].astype(str) if "category" in frame else "none"
    if "lookalike" in frame:
        frame["lookalike"] = frame["lookalike"].map(_as_bool(source))
    frame["prompt"] = frame["prompt"].astype(str).str.strip()
    frame = _subsample(frame, entry.get("limit"), entry.get("split_seed", 0))
    frame["split"] = assign_split(frame, entry.get("eval_fraction", 0.5), entry.get("split_seed", 0), "category")
    frame["dataset"] = name
    extra = [c for c in ("lookalike", "response") if c in frame]
    return frame[PROMPT_COLUMNS + extra]


def _as_bool(source: str):
    truthy, falsy = {"true", "1", "yes"}, {"false", "0", "no", ""}

    def convert(value) -> bool:
        text = str(value).strip().lower()
        if text in truthy:
            return True
        if text in falsy:
            return False
        raise DataError(f"column 'lookalike' must be true/false, got {value!r}", source=source)

    return convert


def derive_malicious_intent(name: str, entry: Mapping, base: pd.DataFrame) -> pd.DataFrame:
    """The "-MI" set: each harmful prompt plus its category's intent sentence (docs/method.md#2-data)."""
    intents_entry = {"source": entry.get("intents", "embedded:intents"), "columns": entry.get("intent_columns")}
    source = describe_source(intents_entry)
    intents = map_columns(read_source(intents_entry), intents_entry, required=["category", "intent"], optional=[])
    _check_text_column(intents, "category", source)
    by_category = dict(zip(intents["category"].astype(str), intents["intent"].astype(str).str.strip()))
    missing = sorted(set(base["category"]) - set(by_category))
    if missing:
        raise DataError(f"no intent sentence for categories: {', '.join(missing)}", source=source)
    frame = pd.DataFrame(
        {
            "prompt_id": base["prompt_id"] + "-mi",
            "prompt": [f"{p} {by_category[c]}" for p, c in zip(base["prompt"], base["category"])],
            "category": base["category"],
            "split": base["split"],  # the same split as the plain prompts they pair with
            "dataset": name,
            "base_prompt_id": base["prompt_id"],
            "intent": [by_category[c] for c in base["category"]],
        }
    )
    return frame


def _split_final_answer(frame: pd.DataFrame) -> pd.DataFrame:
    """GSM8k's ``answer`` column holds "<reasoning> #### <answer>": split it into ours."""
    has_mark = frame["answer"].astype(str).str.contains(_FINAL_MARK, regex=False)
    if has_mark.any():
        parts = frame.loc[has_mark, "answer"].astype(str).str.rsplit(_FINAL_MARK, n=1)
        if "reasoning" not in frame:
            frame["reasoning"] = ""
        frame.loc[has_mark, "reasoning"] = parts.str[0].str.strip()
        frame.loc[has_mark, "answer"] = parts.str[1].str.strip()
    return frame


def prepare_math(name: str, entry: Mapping) -> pd.DataFrame:
    source = entry["source"]
    if source.startswith("generator:"):
        from rim.data.math_generators import GENERATORS

        generator = source.split(":", 1)[1]
        if generator not in GENERATORS:
            raise DataError(f"unknown generator '{generator}'; known: {', '.join(sorted(GENERATORS))}", source=source)
        frame = GENERATORS[generator](int(entry.get("n", 200)), int(entry.get("seed", 0)))
    else:
        source = describe_source(entry)
        raw = read_source(entry)
        frame = map_columns(raw, entry, required=["question", "answer"], optional=["problem_id", "reasoning"])
        frame = _split_final_answer(frame)
    _check_text_column(frame, "question", source)
    answers = []
    for index, value in frame["answer"].items():
        try:
            answers.append(_normalize_number(str(value)))
        except ValueError:
            raise DataError(f"answer {value!r} is not a number", source=source, row=_row(index)) from None
    frame["answer"] = answers
    if "problem_id" not in frame:
        frame["problem_id"] = [f"{name}-{i + 1:05d}" for i in range(len(frame))]
    frame["reasoning"] = frame["reasoning"].fillna("").astype(str) if "reasoning" in frame else ""
    frame["final"] = f"{_FINAL_MARK} " + frame["answer"]
    frame = _subsample(frame, entry.get("limit"), entry.get("split_seed", 0))
    frame["split"] = assign_split(frame, entry.get("eval_fraction", 0.0), entry.get("split_seed", 0))
    frame["dataset"] = name
    return frame[MATH_COLUMNS]


def prepare_dataset(
    name: str,
    entry: Mapping,
    derived_from: str | Path | None = None,
    disjoint_from: Mapping[str, str | Path] | None = None,
) -> pd.DataFrame:
    """Build the table of dataset ``name`` from its config entry (``datasets.<name>``).

    ``disjoint_from`` maps the names of ``entry["disjoint_from"]`` to their prepared tables.
    """
    kind = entry.get("kind", "prompts")
    if entry.get("derive_from"):
        if derived_from is None:
            raise DataError(f"dataset '{name}' derives from '{entry['derive_from']}': pass its prepared table")
        frame = derive_malicious_intent(name, entry, read_table(derived_from))
    elif kind == "math":
        frame = prepare_math(name, entry)
    else:
        frame = prepare_prompts(name, entry)
    wanted = list(entry.get("disjoint_from") or [])
    if wanted:
        given = dict(disjoint_from or {})
        missing = [other for other in wanted if other not in given]
        if missing:
            raise DataError(f"dataset '{name}' must be disjoint from {', '.join(missing)}: pass their prepared tables")
        frame = drop_overlap(name, frame, {other: read_table(given[other]) for other in wanted})
    return frame


def _text_key(text: str) -> str:
    """Questions compare case- and whitespace-insensitively ("How  many" == "how many")."""
    return " ".join(str(text).lower().split())


def _text_column(frame: pd.DataFrame) -> str:
    return "question" if "question" in frame else "prompt"


def drop_overlap(name: str, frame: pd.DataFrame, others: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Drop the rows whose question (or prompt) also appears, in any split, in one of ``others``.

    A held-out set drawn from a training set's generator (docs/method.md#2-data) then holds only
    problems no fine-tuning run has seen, whatever seeds the generators were given.
    """
    column = _text_column(frame)
    seen: set[str] = set()
    for other in others.values():
        seen.update(_text_key(text) for text in other[_text_column(other)])
    overlap = frame[column].map(_text_key).isin(seen)
    if overlap.all():
        raise DataError(
            f"dataset '{name}': every row also appears in {', '.join(others)} (disjoint_from); nothing is left"
        )
    if overlap.any():
        log.info(
            "dataset %s: dropped %d of %d rows that appear in %s",
            name,
            int(overlap.sum()),
            len(frame),
            ", ".join(others),
        )
    return frame[~overlap].reset_index(drop=True)


def summary(frame: pd.DataFrame) -> str:
    """One log line: rows per split (and per category for prompt sets)."""
    counts = frame.groupby("split").size().to_dict()
    text = f"{len(frame)} rows ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})"
    if "category" in frame and frame["category"].nunique() > 1:
        text += f", {frame['category'].nunique()} categories"
    return text
