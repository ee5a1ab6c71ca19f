"""Load and validate the workflow configuration against its JSON schema.

The schema (``workflow/schemas/config.schema.yaml`` and the per-stage files it references) is
the reference documentation of every key: each carries a description and a default. Validation
fills the defaults in place and fails with a message that names the offending key, so a typo or
a wrong type stops a run at start-up instead of hours later.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from rim.errors import ConfigError

DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


# libyaml's loader where PyYAML has it: the schema files are read at every Snakefile parse.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_SAFE_LOADER)


def _registry(schema_path: Path) -> Registry:
    """Resolve ``$ref: other.schema.yaml`` relative to the schema's own folder."""

    retrieved: dict[Path, Resource] = {}  # each schema file read once, however often it is referenced

    def retrieve(uri: str) -> Resource:
        name = uri.removeprefix("file://")
        candidate = Path(name)
        if not candidate.is_absolute():
            candidate = schema_path.parent / name
        if candidate not in retrieved:
            contents = _load_yaml(candidate)
            # A "$schema" key would make jsonschema validate the sub-schema with its stock class,
            # which does not fill defaults; the top-level schema's dialect applies anyway.
            contents.pop("$schema", None)
            retrieved[candidate] = Resource.from_contents(contents, default_specification=DRAFT202012)
        return retrieved[candidate]

    return Registry(retrieve=retrieve)


def _with_defaults(validator_class):
    """A validator that writes each property's ``default`` into the instance it checks."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "$ref" in subschema and "default" not in subschema:
                    subschema = validator._resolver.lookup(subschema["$ref"]).contents
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def key_path(parts: Iterable[Any]) -> str:
    """``['models', 'smollm2', 'dtype']`` -> ``models.smollm2.dtype``; list items as ``[i]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed))
        pattern_ok = error.schema.get("patternProperties")
        messages = []
        for extra in extras:
            if pattern_ok and any(re.search(p, extra) for p in pattern_ok):
                continue
            full = f"{where}.{extra}" if error.absolute_path else extra
            hint = difflib.get_close_matches(extra, allowed, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            messages.append(
                f"config key '{full}' is not a known setting{suggestion}; allowed here: {', '.join(allowed) or 'none'}"
            )
        if messages:
            return "\n".join(messages)
    if error.validator == "required":
        return f"config key '{where}': {error.message}"
    return f"config key '{where}': {error.message}"


def validate_config(config: dict, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Check ``config`` against the schema, fill defaults in place and return it.

    Raises ConfigError listing every problem, each naming its key.
    """
    schema_path = Path(schema_path).resolve()
    schema = _load_yaml(schema_path)
    schema.setdefault("$id", schema_path.as_uri())
    validator_class = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_class(schema, registry=_registry(schema_path))
    # Defaults are filled while validating, so a second pass reports errors on the filled config.
    list(validator.iter_errors(config))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for error in errors:
            text = _describe(error)
            if text not in lines:
                lines.append(text)
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join("\n".join(lines).split("\n")))
    check_consistency(config)
    return config


def check_consistency(config: Mapping) -> None:
    """Cross-key checks the schema cannot express: references between config blocks."""
    datasets = config.get("datasets", {})
    for name, entry in datasets.items():
        derived = entry.get("derive_from")
        if derived and derived not in datasets:
            raise ConfigError(
                f"config key 'datasets.{name}.derive_from': dataset '{derived}' is not defined under 'datasets'"
            )
        for other in entry.get("disjoint_from") or []:
            if other == name or other not in datasets:
                raise ConfigError(
                    f"config key 'datasets.{name}.disjoint_from': '{other}' is "
                    + ("the dataset itself" if other == name else "not defined under 'datasets'")
                )
    _check_figure_inputs(config)
    # Each stage checks the references of its own block (imports stay light: no torch).
    from rim.evaluation.settings import check_evaluation_config

    check_evaluation_config(config)
    from rim.neurons import check_config as check_neurons_config

    check_neurons_config(config)
    from rim.heads_settings import check_config as check_heads_config

    check_heads_config(config)


def _check_figure_inputs(config: Mapping) -> None:
    """Every input set a figure reads ({prompt_set, mode}, defaults included) names a defined
    prompt set and mode: otherwise Snakemake would only say that an evaluation table is missing."""
    prompt_sets = (config.get("evaluation") or {}).get("prompt_sets") or {}
    modes = config.get("prompt_modes") or {}
    for figure, block in (config.get("figures") or {}).items():
        if not isinstance(block, Mapping) or block.get("enabled", True) is False:
            continue
        for key, value in block.items():
            if not (isinstance(value, Mapping) and {"prompt_set", "mode"} <= set(value)):
                continue
            where = f"config key 'figures.{figure}.{key}'"
            if value["prompt_set"] not in prompt_sets:
                raise ConfigError(
                    f"{where}: prompt set '{value['prompt_set']}' is not defined under 'evaluation.prompt_sets' "
                    f"(defined: {', '.join(sorted(prompt_sets))}); name one of them"
                    + (", or null to leave that part out" if key == "math" else "")
                )
            if value["mode"] not in modes:
                raise ConfigError(f"{where}: mode '{value['mode']}' is not defined under 'prompt_modes'")


def load_config(path: str | Path, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Read a YAML config file and validate it (for use outside Snakemake)."""
    path = Path(path)
    try:
        config = _load_yaml(path) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    return validate_config(config, schema_path)
