# Helpers for all stages: config validation, wildcard constraints, input functions.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The science package lives in scripts/rim, beside the step scripts.
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from rim.config import validate_config  # noqa: E402
from rim.errors import ConfigError  # noqa: E402

try:
    validate_config(
        config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),


# ----- models ----------------------------------------------------------------------------------
# Settings of a model entry that the later stages own (alignment, fine-tuning) are not part of
# the model's preparation, so editing them does not re-prepare the model.
MODEL_STAGE_KEYS = {"alignment", "finetuning"}


def model_settings(wildcards):
    """The model's own entry (source, family, dtype, prompt settings), for prepare_model."""
    entry = config["models"][wildcards.model]
    return {key: value for key, value in entry.items() if key not in MODEL_STAGE_KEYS}


def source_reference(model):
    return f"results/models/{model}/source.json"


# ----- datasets --------------------------------------------------------------------------------
def dataset_path(name):
    return f"results/data/{name}.parquet"


def dataset_inputs(wildcards):
    """A derived set (harmful_mi) reads the prepared table of the set it derives from."""
    parent = config["datasets"][wildcards.dataset].get("derive_from")
    return {"parent": dataset_path(parent)} if parent else {}


def all_datasets():
    return [dataset_path(name) for name in config["datasets"]]


def all_model_sources():
    return [source_reference(model) for model in config["models"]]
