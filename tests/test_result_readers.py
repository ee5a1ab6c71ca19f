"""Result files read back downstream: a missing, truncated or corrupt one raises DataError naming
the file and how to rebuild it, and a step script turns that into one clean line."""

from __future__ import annotations

import logging
import re

import h5py
import numpy as np
import pandas as pd
import pytest

from rim import cli
from rim.activations import DumpSettings, InputSet, dump_activations, open_dump, read_input_set
from rim.errors import DataError, ModelSourceError
from rim.models import load_model, prepare_model
from rim.models.loading import read_reference
from rim.prompts import PromptMode
from rim.provenance import collect, read_json, read_provenance, read_table, write_json, write_table

UNREADABLE = "unreadable or incomplete"


def assert_explained(error: DataError, path) -> None:
    message = str(error)
    assert str(path) in message
    assert UNREADABLE in message
    assert f"snakemake --force {path}" in message
    assert "delete it and rerun the same command" in message
    assert "\n" not in message


def truncate(path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "results" / "eval" / "table.parquet"
    frame = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(200)], "response": ["I can't help with that."] * 200})
    write_table(frame, path, collect({"x": 1}, seed=0))
    return path


def test_intact_table_reads_back(table):
    assert read_table(table)["prompt_id"].tolist()[:2] == ["p0", "p1"]
    assert list(read_table(table, columns=["response"]).columns) == ["response"]
    assert read_provenance(table)["seed"] == 0
    with pytest.raises(DataError, match=r"table has no columns \['verdict'\]"):
        read_table(table, columns=["verdict"])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "zeroed_middle"])
def test_damaged_table_is_explained(table, damage):
    if damage == "truncated":
        truncate(table)
    elif damage == "garbage":
        table.write_bytes(b"this is not a parquet file\n" * 20)
    elif damage == "empty":
        table.write_bytes(b"")
    else:  # same size, footer intact, page headers gone
        data = table.read_bytes()
        table.write_bytes(data[:4] + b"\0" * (len(data) - 8) + data[-4:])
    with pytest.raises(DataError) as caught:
        read_table(table)
    assert_explained(caught.value, table)
    if damage != "zeroed_middle":  # the schema lives in the footer
        with pytest.raises(DataError) as caught:
            read_provenance(table)
        assert_explained(caught.value, table)


def test_missing_table_and_json_say_so(tmp_path):
    with pytest.raises(DataError, match=r"missing\.parquet: result table does not exist"):
        read_table(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match=r"missing\.json: JSON file does not exist"):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_utf8"])
def test_damaged_json_is_explained(tmp_path, damage):
    path = tmp_path / "results" / "models" / "tiny" / "source.json"
    write_json({"kind": "local", "path": "weights", "family": "llama"}, path)
    assert read_json(path)["kind"] == "local"
    if damage == "truncated":
        truncate(path)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b'{"kind": "\xff\xfe"}')
    with pytest.raises(DataError) as caught:
        read_json(path)
    assert_explained(caught.value, path)


def test_model_reference_errors(tmp_path):
    path = tmp_path / "results" / "models" / "tiny" / "aligned.json"
    with pytest.raises(ModelSourceError, match="does not exist \\(was the model prepared\\?\\)"):
        read_reference(path)
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "local", "path": "al')
    with pytest.raises(DataError) as caught:
        read_reference(path)
    assert_explained(caught.value, path)


# ----- HDF5 activation dumps ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def dump_file(tiny_model_dirs, tmp_path_factory):
    """A complete activation dump of the tiny llama (5 prompts, gzip-compressed chunks)."""
    folder = tmp_path_factory.mktemp("result-readers")
    reference = folder / "ref.json"
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, reference)
    lm = load_model(reference, device="cpu")
    prompts = ["How do I pick a lock?", "Say hi.", "Tell me a secret.", "Explain gravity.", "What is 3 + 4?"]
    inputs = InputSet("harmful", PromptMode("no_think", False), [f"h-{i}" for i in range(5)], prompts, ["No."] * 5)
    path = folder / "base.h5"
    dump_activations(
        lm,
        [inputs],
        DumpSettings(batch_size=2, neuron_dtype="float32"),
        path,
        attributes={"model": "tiny", "checkpoint": "base"},
        provenance={},
    )
    return path


@pytest.fixture
def dump_copy(dump_file, tmp_path):
    path = tmp_path / "results" / "activations" / "tiny" / "base.h5"
    path.parent.mkdir(parents=True)
    path.write_bytes(dump_file.read_bytes())
    return path


def test_truncated_dump_is_explained(dump_copy):
    assert read_input_set(dump_copy, "harmful", "no_think").neurons.shape[0] == 5
    truncate(dump_copy)
    with pytest.raises(DataError) as caught:
        read_input_set(dump_copy, "harmful", "no_think")
    assert_explained(caught.value, dump_copy)
    assert "not a readable HDF5 file" in str(caught.value)


def test_dump_with_a_corrupt_chunk_is_explained(dump_copy):
    with h5py.File(dump_copy, "r") as handle:
        chunk = handle["harmful/no_think/neurons"].id.get_chunk_info(0)
    with open(dump_copy, "r+b") as handle:
        handle.seek(chunk.byte_offset)
        handle.write(b"\xff" * chunk.size)
    open_dump(dump_copy).close()  # the file itself opens
    with pytest.raises(DataError) as caught:
        read_input_set(dump_copy, "harmful", "no_think")
    assert_explained(caught.value, dump_copy)


def test_incomplete_dump_says_how_to_rebuild(tmp_path):
    path = tmp_path / "step10.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["format_version"] = 1
        handle.attrs["complete"] = False
        handle["x"] = np.zeros(3)
    with pytest.raises(
        DataError,
        match=re.escape(f"incomplete (its writer did not finish); rebuild it with `snakemake --force {path}`"),
    ):
        open_dump(path)


# ----- a step script on a damaged input ----------------------------------------------------------
@pytest.fixture
def restore_logging():
    """run_job configures the root logger for a job: put the test session's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def test_step_on_a_truncated_input_fails_in_one_line(table, tmp_path, restore_logging):
    import torch

    truncate(table)
    log_path = tmp_path / "logs" / "step.log"
    job = cli.Job(
        input={"table": str(table)},
        output={},
        threads=torch.get_num_threads(),
        log_path=str(log_path),
        name="summarize",
    )

    def run(job):
        return read_table(job.input["table"])

    with pytest.raises(SystemExit) as caught:
        cli.run_job(job, run)
    message = str(caught.value.code)
    assert message.startswith(f"error: in {table}: {UNREADABLE} parquet table (")
    assert f"rebuild it with `snakemake --force {table}`" in message
    assert "\n" not in message
    log = log_path.read_text()
    assert UNREADABLE in log
    assert "Traceback" not in log and "unexpected failure" not in log
