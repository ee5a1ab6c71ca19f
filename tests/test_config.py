"""Config validation: defaults filled from the schema, and errors that name the key."""

from __future__ import annotations

import copy

import pytest

from rim.config import key_path, load_config, validate_config
from rim.errors import ConfigError
from workflow_helpers import REPO, default_config


def test_default_config_is_valid_and_gets_schema_defaults():
    config = validate_config(default_config())
    model = config["models"]["smollm2"]
    assert model["trust_remote_code"] is False  # off unless the config turns it on
    assert model["revision"] is None
    assert config["datasets"]["harmful"]["columns"] == {}
    assert config["prompt_modes"]["no_think"]["statement"] == ""


def test_unknown_top_level_key_is_named_with_a_suggestion():
    config = default_config()
    config["devcie"] = "cpu"
    with pytest.raises(ConfigError, match=r"config key 'devcie' is not a known setting \(did you mean 'device'\?\)"):
        validate_config(config)


def test_nested_typo_names_the_full_key_path():
    config = default_config()
    config["models"]["smollm2"]["dtpye"] = "float32"
    with pytest.raises(
        ConfigError, match=r"'models\.smollm2\.dtpye' is not a known setting \(did you mean 'dtype'\?\)"
    ):
        validate_config(config)


def test_wrong_type_names_the_key():
    config = default_config()
    config["datasets"]["gsm8k_style"]["n"] = "many"
    with pytest.raises(ConfigError, match=r"config key 'datasets\.gsm8k_style\.n': 'many' is not of type 'integer'"):
        validate_config(config)


def test_wrong_enum_value_names_the_key():
    config = default_config()
    config["device"] = "gpu"
    with pytest.raises(ConfigError, match=r"config key 'device': 'gpu' is not one of"):
        validate_config(config)


def test_missing_required_key():
    config = default_config()
    del config["models"]["smollm2"]["source"]
    with pytest.raises(ConfigError, match=r"'models\.smollm2'.*'source' is a required property"):
        validate_config(config)


def test_derived_dataset_must_exist():
    config = default_config()
    config["datasets"]["harmful_mi"]["derive_from"] = "harmfull"
    with pytest.raises(ConfigError, match=r"datasets\.harmful_mi\.derive_from.*'harmfull' is not defined"):
        validate_config(config)


@pytest.mark.parametrize(
    "other, why", [("gsm8k", "not defined under 'datasets'"), ("multiarith_style", "the dataset itself")]
)
def test_a_held_out_set_is_disjoint_from_defined_other_sets(other, why):
    config = default_config()
    config["datasets"]["multiarith_style"]["disjoint_from"] = [other]
    with pytest.raises(ConfigError, match=rf"datasets\.multiarith_style\.disjoint_from.*'{other}' is {why}"):
        validate_config(config)


def test_validation_does_not_change_a_valid_users_values():
    config = default_config()
    before = copy.deepcopy(config)
    validate_config(config)
    for name, entry in before["datasets"].items():
        for key, value in entry.items():
            assert config["datasets"][name][key] == value


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_key_path_formatting():
    assert key_path(["models", "smollm2", "refusal_openers", 2]) == "models.smollm2.refusal_openers[2]"
    assert key_path([]) == "(top level)"


def test_every_schema_property_has_a_description():
    import yaml

    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                assert "description" in sub or "$ref" in sub, f"{where}.{name} has no description"
            for key, value in node.items():
                if key not in ("if", "then", "else"):  # conditions restate keys, not define them
                    walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in (REPO / "workflow" / "schemas").glob("*.schema.yaml"):
        walk(yaml.safe_load(path.read_text()), path.name)
