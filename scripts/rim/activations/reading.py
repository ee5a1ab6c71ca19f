"""Reading a dump back: its input sets as arrays, checked against its format version."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from rim.errors import DataError
from rim.provenance import rebuild_advice, unreadable
from rim.activations.settings import (
    FORMAT_VERSION,
    group_name,
)


# ----- reading ----------------------------------------------------------------------------------
def open_dump(path: str | Path) -> h5py.File:
    """Open a dump for reading; refuse one that was not completed or has another format."""
    path = Path(path)
    if not path.exists():
        raise DataError("activation dump does not exist", source=str(path))
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise unreadable(path, error, "activation dump: not a readable HDF5 file") from None
    if not bool(handle.attrs.get("complete", False)):
        handle.close()
        raise DataError(
            f"activation dump is incomplete (its writer did not finish); {rebuild_advice(path)}", source=str(path)
        )
    if int(handle.attrs.get("format_version", -1)) != FORMAT_VERSION:
        version = handle.attrs.get("format_version")
        handle.close()
        raise DataError(
            f"activation dump has format version {version}, this code reads {FORMAT_VERSION}; {rebuild_advice(path)}",
            source=str(path),
        )
    return handle


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[h5py.File]:
    """``open_dump`` for a ``with`` block: a dataset that fails to read (a corrupt chunk) raises
    the same ``DataError`` as a file that fails to open."""
    with open_dump(path) as handle:
        try:
            yield handle
        except OSError as error:
            raise unreadable(path, error, "activation dump") from None


def _group(handle: h5py.File, prompt_set: str, mode: str, path) -> h5py.Group:
    """The group of an input set; ``mode`` is its group name (``group_name``)."""
    key = f"{prompt_set}/{mode}"
    if key not in handle:
        present = [f"{p}/{m}" for p in handle for m in handle[p]]
        raise DataError(f"no input set {key} in the dump; present: {', '.join(present) or 'none'}", source=str(path))
    return handle[key]


@dataclass
class ActivationSet:
    """One input set read back from a dump."""

    prompt_ids: list[str]
    base_prompt_ids: list[str] | None
    neurons: np.ndarray | None
    prompt_neurons: np.ndarray | None
    residual: np.ndarray | None
    kl_to_base: np.ndarray | None
    attrs: dict
    file_attrs: dict


def _strings(dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in dataset[()]]


def read_input_set(
    path: str | Path,
    prompt_set: str,
    mode: str,
    *,
    neurons: bool = True,
    residual: bool = False,
    responses: str = "own",
    prompt_neurons: bool = False,
) -> ActivationSet:
    """One input set of a dump (``responses``: the checkpoint's own or the base model's);
    ``residual`` also reads the residual states where stored, ``prompt_neurons`` the activations
    pooled over the prompt part only."""
    with _reading(path) as handle:
        group = _group(handle, prompt_set, group_name(mode, responses), path)
        return ActivationSet(
            prompt_ids=_strings(group["prompt_id"]),
            base_prompt_ids=_strings(group["base_prompt_id"]) if "base_prompt_id" in group else None,
            neurons=group["neurons"][()] if neurons else None,
            prompt_neurons=group["neurons_prompt"][()] if prompt_neurons else None,
            residual=group["residual"][()] if (residual and "residual" in group) else None,
            kl_to_base=group["kl_to_base"][()] if "kl_to_base" in group else None,
            attrs={key: _attr(value) for key, value in group.attrs.items()},
            file_attrs={key: _attr(value) for key, value in handle.attrs.items()},
        )


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def input_set_names(path: str | Path) -> list[str]:
    with _reading(path) as handle:
        return [f"{prompt_set}/{mode}" for prompt_set in handle for mode in handle[prompt_set]]


def file_size_mb(path: str | Path) -> float:
    return os.path.getsize(path) / 2**20
