"""Model sources, references and loading (offline, tiny models)."""

from __future__ import annotations

import os

import pytest
import torch

from rim.errors import ModelSourceError, RimError
from rim.models import load_model, prepare_model, read_reference
from rim.models.loading import resolve_device, source_kind
from rim.provenance import write_json


def test_source_kinds():
    assert source_kind("embedded:smollm2") == "embedded"
    assert source_kind("./models/x") == "local"
    assert source_kind("Qwen/Qwen3-4B") == "hub"


def test_local_reference_is_written_and_loads(tiny_model_dirs, tmp_path):
    reference = prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, tmp_path / "source.json")
    assert reference["family"] == "llama" and reference["kind"] == "local"
    assert reference["trust_remote_code"] is False
    loaded = load_model(tmp_path / "source.json", device="cpu")
    assert loaded.model.dtype == torch.float32  # dtype auto on CPU
    assert loaded.tokenizer.padding_side == "left"
    assert not loaded.model.training


def test_missing_local_directory_names_the_model(tmp_path):
    with pytest.raises(ModelSourceError, match=r"model 'ghost': local model directory .*ghost-dir does not exist"):
        prepare_model("ghost", {"source": str(tmp_path / "ghost-dir")}, tmp_path / "ref.json")


def test_directory_without_config_is_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="has no config.json"):
        prepare_model("empty", {"source": str(tmp_path / "empty")}, tmp_path / "ref.json")


def test_unreachable_hub_model_error_names_the_model(tmp_path, hub_offline):
    with pytest.raises(
        ModelSourceError, match=r"model 'nobody/no-such-model' could not be loaded from the Hugging Face hub"
    ):
        prepare_model("x", {"source": "nobody/no-such-model"}, tmp_path / "ref.json")


def test_explicit_cuda_without_gpu_fails_loudly():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RimError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_run_manifest_overlays_a_checkpoint_on_its_base(tiny_model_dirs, tmp_path):
    base = tmp_path / "models" / "tiny" / "source.json"
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, base)
    run_dir = tmp_path / "finetune" / "tiny" / "gsm8k" / "seed0"
    # A "checkpoint" that is a full copy of another model directory, stored beside the manifest.
    checkpoint_dir = run_dir / "step4"
    loaded = load_model(base, device="cpu")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.down_proj.weight.add_(1.0)
    loaded.model.save_pretrained(checkpoint_dir)
    write_json(
        {
            "base_reference": "../../../../models/tiny/source.json",
            "checkpoints": {"0": {}, "4": {"path": "step4", "checkpoint": "gsm8k/seed0/step4"}},
        },
        run_dir / "run.json",
    )
    step0 = read_reference(run_dir / "run.json", step=0)
    assert step0["path"] == read_reference(base)["path"]
    step4 = load_model(run_dir / "run.json", step=4, device="cpu")
    assert step4.reference["checkpoint"] == "gsm8k/seed0/step4"
    delta = (
        step4.model.model.layers[0].mlp.down_proj.weight
        - load_model(base, device="cpu").model.model.layers[0].mlp.down_proj.weight
    )
    assert torch.allclose(delta, torch.ones_like(delta))
    with pytest.raises(RimError, match="no checkpoint at step 3; available: \\['0', '4'\\]"):
        read_reference(run_dir / "run.json", step=3)
    with pytest.raises(RimError, match="name a step"):
        read_reference(run_dir / "run.json")


def test_missing_reference_file_is_explained(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist \\(was the model prepared\\?\\)"):
        read_reference(tmp_path / "nothing.json")


def test_a_model_is_placed_across_gpus_only_when_the_job_asked_for_several_and_has_them(monkeypatch):
    from rim.models.loading import GPUS_VARIABLE, placed_across_gpus

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv(GPUS_VARIABLE, "2")
    assert placed_across_gpus(torch.device("cuda"))
    assert not placed_across_gpus(torch.device("cpu"))
    monkeypatch.setenv(GPUS_VARIABLE, "1")
    assert not placed_across_gpus(torch.device("cuda"))
    monkeypatch.setenv(GPUS_VARIABLE, "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # asked for 2, SLURM gave 1
    assert not placed_across_gpus(torch.device("cuda"))


def test_logits_of_a_placed_model_come_back_to_the_input_device(tiny_model_dirs):
    from transformers import AutoModelForCausalLM

    from rim.models.loading import _logits_to

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"])
    # "meta" stands in for the first GPU: the logits computed elsewhere are moved there.
    _logits_to(model, torch.device("meta"))
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.device.type == "meta"


def test_a_snakemake_jobs_gpu_resource_reaches_the_loader(monkeypatch):
    from types import SimpleNamespace

    from snakemake.iocontainers import Namedlist

    from rim import cli
    from rim.models.loading import GPUS_VARIABLE

    monkeypatch.setenv(GPUS_VARIABLE, "1")  # restored after the test
    resources = Namedlist(fromdict={"gpu": 2, "mem_mb": 1000})
    fake = SimpleNamespace(
        input=Namedlist(),
        output=Namedlist(),
        params=Namedlist(),
        wildcards=Namedlist(),
        threads=1,
        log=Namedlist(),
        rule="generate_and_dump",
        resources=resources,
    )
    cli.Job.from_snakemake(fake)
    assert os.environ[GPUS_VARIABLE] == "2"
