"""The evaluation block of the config, turned into what one evaluation job needs (no torch here).

Config (``evaluation`` in config/config.yaml, schema workflow/schemas/evaluation.schema.yaml):

- ``prompt_sets.<name>``: a dataset, its split, a size limit, what it measures (``kind``:
  ``harmful`` -> refusal and misalignment, ``harmless`` -> over-refusal, ``math`` -> accuracy) and
  optionally a fixed generation length;
- ``judges``: which verdicts each response gets (docs/method.md#3-judging), several at once;
- ``generation``: batch size, prefix sharing, the extra tokens thinking-ON modes may take;
- ``groups``: which (prompt set, mode) pairs run on which checkpoints; ``ras`` is what
  ``results/ras.parquet`` needs, every group together is what the default target ``all`` runs.

This module is imported by the Snakefile (config checks), so it must stay light: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from rim.errors import ConfigError, DataError

KINDS = ("harmful", "harmless", "math")
JUDGES = ("phrases", "refusal_score", "rubric", "classifier")
# The judges that read a generated response (refusal_score reads the first-token logits only).
GENERATING_JUDGES = ("phrases", "rubric", "classifier")
CHECKPOINT_CHOICES = ("all", "base_and_last", "base")
if TYPE_CHECKING:
    import pandas as pd

DATASET_KIND = {"harmful": "prompts", "harmless": "prompts", "math": "math"}


@dataclass
class EvaluationSettings:
    """What one evaluation (one prompt set in one mode) needs; built from the rule's params.

    ``judges`` holds only the enabled judges that apply to this prompt set's kind. Judges that
    load a model or open connections are built once and kept here (``judge_cache``), so a caller
    that evaluates many conditions should build one ``EvaluationSettings`` and reuse it.
    """

    prompt_set: str
    kind: str
    max_new_tokens: int | None = None
    split: str | None = "eval"
    limit: int | None = None
    limit_seed: int = 0
    batch_size: int = 32
    share_prefix: bool = True
    thinking_tokens: int = 128
    device: str = "auto"
    judges: dict[str, dict] = field(default_factory=dict)
    # The answer length the judges need, when they are not given (a generation job, see
    # generation_needs); None: read it from ``judges``.
    answer_tokens: int | None = None
    judge_cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_params(
        cls,
        prompt_set: Mapping,
        *,
        name: str | None = None,
        generation: Mapping | None = None,
        judges: Mapping | None = None,
        device: str = "auto",
        needs: Mapping | None = None,
    ) -> "EvaluationSettings":
        """From a prompt set's config entry, the generation block and the judges block (or, to
        generate without judging, what generation needs of the judges: ``generation_needs``)."""
        generation = dict(generation or {})
        name = name or prompt_set.get("name") or prompt_set.get("dataset")
        kind = prompt_set.get("kind")
        if kind not in KINDS:
            raise ConfigError(
                f"config key 'evaluation.prompt_sets.{name}.kind': {kind!r} is not one of {', '.join(KINDS)}"
            )
        return cls(
            prompt_set=str(name),
            kind=kind,
            max_new_tokens=prompt_set.get("max_new_tokens"),
            split=prompt_set.get("split", "eval"),
            limit=prompt_set.get("limit"),
            limit_seed=int(prompt_set.get("limit_seed", 0)),
            batch_size=int(generation.get("batch_size", 32)),
            share_prefix=bool(generation.get("share_prefix", True)),
            thinking_tokens=int(
                prompt_set["thinking_tokens"]
                if prompt_set.get("thinking_tokens") is not None
                else generation.get("thinking_tokens", 128)
            ),
            device=device,
            judges=applicable_judges(judges or {}, kind)
            if needs is None
            else ({"refusal_score": {"enabled": True}} if needs.get("refusal_score") else {}),
            answer_tokens=None if needs is None else int(needs.get("answer_tokens", 0)),
        )

    @classmethod
    def from_config(cls, config: Mapping, prompt_set: str) -> "EvaluationSettings":
        """From a whole (validated) workflow config, for one named prompt set."""
        block = config.get("evaluation", {})
        sets = block.get("prompt_sets", {})
        if prompt_set not in sets:
            raise ConfigError(
                f"'{prompt_set}' is not defined under 'evaluation.prompt_sets'; defined: {', '.join(sets)}"
            )
        return cls.from_params(
            sets[prompt_set],
            name=prompt_set,
            generation=block.get("generation"),
            judges=block.get("judges"),
            device=config.get("device", "auto"),
        )

    @classmethod
    def coerce(cls, settings: "EvaluationSettings | Mapping") -> "EvaluationSettings":
        """Accept the object itself or the mapping of rule params (prompt_set, generation, judges)."""
        if isinstance(settings, cls):
            return settings
        if not isinstance(settings, Mapping) or "prompt_set" not in settings:
            raise ConfigError(
                "evaluation settings must be an EvaluationSettings or a mapping with keys "
                "prompt_set (the prompt set's entry, with its name), generation and judges"
            )
        return cls.from_params(
            settings["prompt_set"],
            name=settings.get("name"),
            generation=settings.get("generation"),
            judges=settings.get("judges"),
            device=settings.get("device", "auto"),
        )

    def generation_length(self, thinking: bool) -> int:
        """New tokens to generate: the prompt set's fixed length, else what the judges need.

        Refusals show in the first tokens of an answer, so the phrase judge needs only a short
        one; the rubric and classifier judges read longer answers, math needs a whole solution.
        With thinking ON the reasoning comes before the answer, in every family (a native think
        block, or a prefilled opener the model continues): it gets ``thinking_tokens`` more
        (docs/method.md#answers).
        """
        if self.max_new_tokens is not None:
            length = int(self.max_new_tokens)
        elif self.answer_tokens is not None:
            length = self.answer_tokens
        else:
            needs = [
                int(spec.get("max_new_tokens", 0)) for name, spec in self.judges.items() if name in GENERATING_JUDGES
            ]
            length = max(needs, default=0)
        if length and thinking:
            length += self.thinking_tokens
        return length


def applicable_judges(judges: Mapping, kind: str) -> dict[str, dict]:
    """The enabled judges whose ``apply_to`` lists this prompt set's kind."""
    chosen = {}
    for name, spec in judges.items():
        if name not in JUDGES:
            raise ConfigError(f"config key 'evaluation.judges.{name}': unknown judge; known: {', '.join(JUDGES)}")
        spec = dict(spec or {})
        if spec.get("enabled", False) and kind in spec.get("apply_to", KINDS):
            chosen[name] = spec
    return chosen


def generation_needs(judges: Mapping, kind: str) -> dict:
    """What generating the responses of a prompt set of ``kind`` reads from the judges block: the
    answer length the judges need and whether the first-token refusal score is wanted.

    Only this is a generation job's param, so that editing a judge's phrases, endpoint or model
    re-judges the stored responses without generating them again.
    """
    chosen = applicable_judges(judges, kind)
    tokens = [int(spec.get("max_new_tokens", 0)) for name, spec in chosen.items() if name in GENERATING_JUDGES]
    return {"answer_tokens": max(tokens, default=0), "refusal_score": "refusal_score" in chosen}


# ----- prompt selection ------------------------------------------------------------------------
def select_prompts(table: "pd.DataFrame", settings: EvaluationSettings, source: str | None = None) -> "pd.DataFrame":
    """The rows of a prepared dataset table that this prompt set evaluates.

    Rows of the configured split; with a limit, a seeded subsample that takes prompts from every
    category in turn (so 40 harmful prompts cover all 10 HEx-PHI categories). The choice depends
    only on the table and the config, so every checkpoint and mode sees the same prompts.
    """
    import numpy as np

    source = source or settings.prompt_set
    frame = table
    if settings.split:
        if "split" not in frame:
            raise DataError("has no 'split' column (was it prepared by the workflow?)", source=source)
        frame = frame[frame["split"] == settings.split]
        if frame.empty:
            raise DataError(
                f"no rows in split '{settings.split}' for prompt set '{settings.prompt_set}' "
                f"(set the dataset's eval_fraction above 0, or the prompt set's split)",
                source=source,
            )
    frame = frame.reset_index(drop=True)
    if settings.limit is None or settings.limit >= len(frame):
        return frame
    rng = np.random.default_rng(settings.limit_seed)
    order = rng.permutation(len(frame))
    if "category" in frame:
        # Round-robin over categories, each in its seeded order: balanced and deterministic.
        categories = frame["category"].astype(str).to_numpy()
        queues = {c: [i for i in order if categories[i] == c] for c in sorted(set(categories))}
        picked: list[int] = []
        while len(picked) < settings.limit:
            for queue in queues.values():
                if queue and len(picked) < settings.limit:
                    picked.append(queue.pop(0))
        order = np.array(picked)
    keep = np.sort(order[: settings.limit])
    return frame.iloc[keep].reset_index(drop=True)


# ----- config checks (called from rim.config.check_consistency) ---------------------------------
def check_evaluation_config(config: Mapping) -> None:
    """Cross-references of the evaluation block: datasets, kinds, modes, groups."""
    block = config.get("evaluation")
    if not block:
        return
    datasets = config.get("datasets", {})
    modes = config.get("prompt_modes", {})
    sets = block.get("prompt_sets", {})
    for name, entry in sets.items():
        key = f"evaluation.prompt_sets.{name}"
        dataset = entry.get("dataset")
        if dataset not in datasets:
            raise ConfigError(f"config key '{key}.dataset': dataset '{dataset}' is not defined under 'datasets'")
        expected = DATASET_KIND[entry.get("kind", "harmful")]
        actual = datasets[dataset].get("kind", "prompts")
        if datasets[dataset].get("derive_from"):
            actual = "prompts"
        if actual != expected:
            raise ConfigError(
                f"config key '{key}.kind': a {entry.get('kind')} prompt set needs a dataset of kind "
                f"'{expected}', but dataset '{dataset}' is of kind '{actual}'"
            )
    for group, entry in block.get("groups", {}).items():
        key = f"evaluation.groups.{group}"
        for name in entry.get("prompt_sets", []):
            if name not in sets:
                raise ConfigError(
                    f"config key '{key}.prompt_sets': '{name}' is not defined under 'evaluation.prompt_sets'"
                )
        for mode in entry.get("modes", []):
            if mode not in modes:
                raise ConfigError(f"config key '{key}.modes': '{mode}' is not defined under 'prompt_modes'")
    rubric = block.get("judges", {}).get("rubric", {})
    if rubric.get("enabled") and not rubric.get("model"):
        raise ConfigError("config key 'evaluation.judges.rubric.model': the rubric judge is enabled but names no model")
    classifier = block.get("judges", {}).get("classifier", {})
    if classifier.get("enabled") and not classifier.get("model"):
        raise ConfigError(
            "config key 'evaluation.judges.classifier.model': the classifier judge is enabled but names no model"
        )


def ckpt_fields(ckpt: str) -> dict:
    """``{checkpoint, run, seed, step}`` of a checkpoint id (rim.checkpoints.checkpoint_fields)."""
    from rim.checkpoints import checkpoint_fields

    return checkpoint_fields(ckpt)
