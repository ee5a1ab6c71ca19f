"""Prompt modes: thinking ON/OFF and the reasoning-pattern self-statements (docs/method.md#1-the-phenomenon).

A prompt mode is a named template in the config, so any model family is described without code:
``thinking`` switches the family's think mode on or off, and ``statement`` is the one-sentence
self-statement placed right after the prompt template (inside the think block for families with
a native think mode). The three patterns of the paper each have a ``control`` mode that
discourages the effort-minimizing habit and a ``target`` mode that encourages it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from rim.errors import ConfigError

PATTERNS = ("confirmatory_reasoning", "heuristic_reliance", "instruction_deviation")
VARIANTS = ("control", "target")


@dataclass(frozen=True)
class PromptMode:
    name: str
    thinking: bool
    statement: str = ""
    pattern: str | None = None
    variant: str | None = None


def prompt_mode(name: str, block: Mapping) -> PromptMode:
    """Build a PromptMode from its config entry ``prompt_modes.<name>``."""
    try:
        return PromptMode(
            name=name,
            thinking=bool(block["thinking"]),
            statement=str(block.get("statement") or "").strip(),
            pattern=block.get("pattern"),
            variant=block.get("variant"),
        )
    except KeyError as missing:
        raise ConfigError(f"config key 'prompt_modes.{name}': missing {missing}") from None


def prompt_modes(config_block: Mapping) -> dict[str, PromptMode]:
    return {name: prompt_mode(name, block) for name, block in config_block.items()}


def render(adapter, tokenizer, user: str, mode: PromptMode) -> str:
    """The exact text the model sees for ``user`` in ``mode`` (generation starts after it)."""
    return adapter.render_prompt(tokenizer, user, mode)
