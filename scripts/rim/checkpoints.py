"""Checkpoint ids, the one place that reads and writes them (no heavy imports: the Snakefile uses it).

A checkpoint is ``base`` (the model every run starts from) or ``<run>/seed<seed>/step<step>``, a
saved step of one fine-tuning run with one seed (docs/method.md#4-fine-tuning). Step 0 of every
run is the base model itself, so ``base`` has step 0 and no run or seed.
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple, Sequence

from rim.errors import ConfigError

BASE = "base"
_ID = re.compile(r"(?P<run>[^/]+)/seed(?P<seed>\d+)/step(?P<step>\d+)")


class Checkpoint(NamedTuple):
    run: str | None
    seed: int | None
    step: int


def checkpoint_id(run: str, seed: int, step: int) -> str:
    """``<run>/seed<seed>/step<step>``; step 0 is the base model."""
    return BASE if int(step) == 0 else f"{run}/seed{int(seed)}/step{int(step)}"


def parse_checkpoint(ckpt: str) -> Checkpoint:
    """(run, seed, step) of a checkpoint id; ``(None, None, 0)`` for ``base``."""
    if ckpt == BASE:
        return Checkpoint(None, None, 0)
    match = _ID.fullmatch(str(ckpt))
    if match is None:
        raise ConfigError(f"checkpoint id '{ckpt}' is neither 'base' nor '<run>/seed<seed>/step<step>'")
    return Checkpoint(match["run"], int(match["seed"]), int(match["step"]))


def checkpoint_fields(ckpt: str) -> dict:
    """The identity columns of a table row: ``{checkpoint, run, seed, step}``."""
    run, seed, step = parse_checkpoint(ckpt)
    return {"checkpoint": str(ckpt), "run": run, "seed": seed, "step": step}


def checkpoint_order(ckpts: Iterable[str]) -> list[str]:
    """Distinct ids, base first, then by run, seed and step."""

    def key(ckpt):
        run, seed, step = parse_checkpoint(ckpt)
        return (run is not None, run or "", seed or 0, step)

    return sorted(dict.fromkeys(ckpts), key=key)


def choose_checkpoints(ckpts: Iterable[str], which: str | Sequence[str]) -> list[str]:
    """The checkpoints a config block asks for among ``ckpts``, in checkpoint order: ``all``,
    ``base``, ``base_and_last`` (base and the last step of every run and seed), or a list of ids
    (those present are kept, in the list's order)."""
    present = checkpoint_order(ckpts)
    if not isinstance(which, str):
        return [ckpt for ckpt in which if ckpt in present]
    if which == "all":
        return present
    chosen = [ckpt for ckpt in present if ckpt == BASE]
    if which == BASE:
        return chosen
    if which != "base_and_last":
        raise ConfigError(f"checkpoints: '{which}' is not one of all, base, base_and_last or a list of ids")
    last: dict[tuple, tuple[int, str]] = {}
    for ckpt in present:
        run, seed, step = parse_checkpoint(ckpt)
        if run is not None and step >= last.get((run, seed), (-1, ""))[0]:
            last[(run, seed)] = (step, ckpt)
    return chosen + checkpoint_order(ckpt for _, ckpt in last.values())
