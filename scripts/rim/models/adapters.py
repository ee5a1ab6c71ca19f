"""Per-family adapters: the little that differs between model families.

Everything else in the workflow is family-agnostic (docs/method.md#1-the-phenomenon,
#5-refusal-heads, #6-safety-neurons-and-ras; the refusal_direction pattern). An adapter says
- how prompts are rendered: the chat template, and how "thinking" is switched on or off
  (Qwen3's ``enable_thinking``; a prefilled reasoning opener for families without a think mode);
- which tokens open a refusal (for the first-token refusal score);
- where the attention heads are (the per-head slices of the input of the attention output
  projection) and where the MLP neurons are (the channels of the input of the down projection;
  in a mixture-of-experts layer, the channels of each expert's down-projection input: see
  ``experts`` below and docs/method.md#mixture-of-experts-neurons);
- which linear layers (and, for fused expert weights, which parameters) LoRA adapts.

New families are added by registering an adapter; per-model overrides (system prompt, reasoning
opener, refusal openers) come from the model's config entry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import torch

from rim.errors import ConfigError

if TYPE_CHECKING:
    from rim.prompts import PromptMode

STATEMENT_PLACEMENTS = ("after_opener", "before_opener")
DEFAULT_REFUSAL_OPENERS = ("I", "Sorry", "I'm sorry", "I cannot", "I can't", "As an AI", "Unfortunately")


@dataclass(frozen=True)
class FamilyAdapter:
    """What differs between model families, with per-model overrides applied."""

    name: str
    model_types: tuple[str, ...]
    native_thinking: bool = False
    think_open: str = "<think>"
    think_close: str = "</think>"
    reasoning_opener: str = "Let me think step by step."
    # Families without a native think block: where the answer starts in a thinking-ON response
    # (None: the whole continuation is the answer; rim.evaluation.answers).
    answer_marker: str | None = None
    # Where a reasoning-pattern statement goes in a prefilled assistant turn: after the opener
    # (the analogue of Qwen3's "<think>\n<statement>") or before it (the opener last, inviting
    # the model to reason on; README: pattern statements on families without a think mode).
    statement_placement: str = "after_opener"
    # Text after a pattern statement in a prefilled assistant turn (families without a think
    # block), e.g. "My answer:": without it a model may end its turn right after the statement,
    # leaving nothing to judge (README: reasoning patterns on a model without a think mode).
    statement_cue: str | None = None
    refusal_openers: tuple[str, ...] = DEFAULT_REFUSAL_OPENERS
    system_role: bool = True
    system_prompt: str | None = None
    layers_path: str = "model.layers"
    attention_output: str = "self_attn.o_proj"
    mlp_output: str = "mlp.down_proj"
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # Mixture-of-experts families: the module (under each layer) that holds every expert's
    # weights as fused tensors, gate_up_proj [experts, 2 * channels, hidden] and down_proj
    # [experts, hidden, channels], called as experts(hidden [tokens, hidden], top_k_index,
    # top_k_weights) (transformers 5). A neuron is (expert, channel), flattened within its layer
    # as expert * channels + channel (docs/method.md#mixture-of-experts-neurons).
    experts: str | None = None
    # Fused parameters LoRA adapts (peft's target_parameters; one rank-r pair per expert).
    lora_parameters: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    # ----- model anatomy -------------------------------------------------------------------
    def layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        module = model
        for part in self.layers_path.split("."):
            module = getattr(module, part)
        return module

    def num_layers(self, model: torch.nn.Module) -> int:
        return len(self.layers(model))

    def num_heads(self, model: torch.nn.Module) -> int:
        return int(model.config.num_attention_heads)

    def head_dim(self, model: torch.nn.Module) -> int:
        config = model.config
        head_dim = getattr(config, "head_dim", None)
        return int(head_dim or config.hidden_size // config.num_attention_heads)

    def num_neurons(self, model: torch.nn.Module) -> int:
        """Neurons per layer: channels of the MLP intermediate activation (docs/method.md#6-safety-neurons-and-ras,
        decision); in a mixture-of-experts layer, experts x channels per expert."""
        if self.experts is not None:
            n_experts, channels = self.expert_layout(model)
            return n_experts * channels
        return int(self.mlp_output_module(model, 0).in_features)

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    def experts_name(self, layer: int) -> str:
        return f"{self.layers_path}.{layer}.{self.experts}"

    def experts_module(self, model: torch.nn.Module, layer: int) -> torch.nn.Module:
        """The module holding layer ``layer``'s fused expert weights (a ConfigError if absent)."""
        try:
            module = model.get_submodule(self.experts_name(layer))
        except AttributeError:
            module = None
        if module is None or not all(hasattr(module, name) for name in ("gate_up_proj", "down_proj", "act_fn")):
            raise ConfigError(
                f"the {self.name} adapter expects fused expert weights (gate_up_proj, down_proj, act_fn) at "
                f"'{self.experts_name(layer)}'; this model has none there (every layer must be a "
                "mixture-of-experts layer: models that mix dense and sparse layers are not supported)"
            )
        return module

    def expert_layout(self, model: torch.nn.Module) -> tuple[int, int]:
        """(experts per layer, channels per expert), the same in every layer (checked)."""
        layouts = set()
        for layer in range(self.num_layers(model)):
            module = self.experts_module(model, layer)
            n_experts, hidden, channels = module.down_proj.shape
            if tuple(module.gate_up_proj.shape) != (n_experts, 2 * channels, hidden):
                raise ConfigError(
                    f"'{self.experts_name(layer)}': gate_up_proj has shape {tuple(module.gate_up_proj.shape)}, "
                    f"expected {(n_experts, 2 * channels, hidden)} for down_proj {tuple(module.down_proj.shape)} "
                    "(a transposed expert layout this adapter does not read)"
                )
            layouts.add((int(n_experts), int(channels)))
        if len(layouts) != 1:
            raise ConfigError(f"the {self.name} model's layers differ in their experts: {sorted(layouts)}")
        return layouts.pop()

    def attention_output_name(self, layer: int) -> str:
        return f"{self.layers_path}.{layer}.{self.attention_output}"

    def mlp_output_name(self, layer: int) -> str:
        return f"{self.layers_path}.{layer}.{self.mlp_output}"

    def attention_output_module(self, model: torch.nn.Module, layer: int) -> torch.nn.Linear:
        """The linear layer whose input is the concatenation of the per-head outputs."""
        return model.get_submodule(self.attention_output_name(layer))

    def mlp_output_module(self, model: torch.nn.Module, layer: int) -> torch.nn.Linear:
        """The linear layer whose input channels are the MLP neurons."""
        return model.get_submodule(self.mlp_output_name(layer))

    # ----- prompts ---------------------------------------------------------------------------
    def _messages(self, user: str) -> list[dict]:
        if self.system_prompt is None:
            return [{"role": "user", "content": user}]
        if self.system_role:
            return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
        # Families without a system role (Gemma) get the system prompt at the top of the turn.
        return [{"role": "user", "content": f"{self.system_prompt}\n\n{user}"}]

    def _template(self, tokenizer, messages: list[dict], *, thinking: bool, generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
        if self.native_thinking:
            kwargs["enable_thinking"] = thinking
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(
                f"the tokenizer of this {self.name} model has no chat template; "
                "set one (tokenizer.chat_template) or use an instruction-tuned model"
            )
        return tokenizer.apply_chat_template(messages, **kwargs)

    def render_prompt(self, tokenizer, user: str, mode: "PromptMode") -> str:
        """The text fed to the model for one prompt in one mode, ending where generation starts.

        Native think families (Qwen3): OFF puts the template's empty think block in the prompt;
        ON leaves the block to the model, and a reasoning-pattern statement is placed inside the
        opened think block. Other families: ON prefills the assistant turn with a reasoning opener
        (docs/method.md#1-the-phenomenon), and the statement follows it.
        """
        text = self._template(tokenizer, self._messages(user), thinking=mode.thinking, generation_prompt=True)
        if self.native_thinking:
            if mode.thinking and mode.statement:
                text += f"{self.think_open}\n{mode.statement}"
            elif mode.statement:
                text += mode.statement
            return text
        opener = self.reasoning_opener if mode.thinking else ""
        if self.statement_placement not in STATEMENT_PLACEMENTS:
            raise ConfigError(
                f"statement_placement {self.statement_placement!r} is not one of {', '.join(STATEMENT_PLACEMENTS)}"
            )
        statement = self.prefilled_statement(mode)
        parts = (statement, opener) if self.statement_placement == "before_opener" else (opener, statement)
        return text + " ".join(part for part in parts if part)

    def prefilled_statement(self, mode: "PromptMode") -> str:
        """A pattern statement as a prefilled assistant turn carries it: followed by
        ``statement_cue`` when one is set (families without a think block)."""
        if not mode.statement:
            return ""
        return f"{mode.statement} {self.statement_cue}" if self.statement_cue else mode.statement

    def end_of_turn(self, tokenizer) -> str:
        """The text the template puts after an assistant message (e.g. ``<|im_end|>``)."""
        marker = "\x00rim-marker\x00"
        messages = self._messages("hi") + [{"role": "assistant", "content": marker}]
        text = self._template(tokenizer, messages, thinking=False, generation_prompt=False)
        tail = text.split(marker, 1)[1]
        # Keep the end-of-turn token itself; a trailing newline carries no training signal.
        return tail.rstrip("\n") or (tokenizer.eos_token or "")

    def render_training_example(
        self, tokenizer, user: str, response: str, reasoning: str = "", *, thinking: bool | None = None
    ) -> tuple[str, str]:
        """(prompt, completion) for supervised fine-tuning with loss on the completion only.

        Native think families get the reasoning inside the think block (docs/method.md#4-fine-tuning); others get
        it as the start of the visible answer.
        """
        from rim.prompts import PromptMode

        thinking = bool(reasoning) if thinking is None else thinking
        if self.native_thinking:
            prompt = self.render_prompt(tokenizer, user, PromptMode("train", thinking=thinking))
            # OFF: the template already wrote the empty think block into the prompt.
            completion = (
                f"{self.think_open}\n{reasoning.strip()}\n{self.think_close}\n\n{response}" if thinking else response
            )
        else:
            prompt = self._template(tokenizer, self._messages(user), thinking=False, generation_prompt=True)
            completion = f"{reasoning.strip()}\n{response}" if reasoning.strip() else response
        return prompt, completion + self.end_of_turn(tokenizer)

    # ----- refusal tokens --------------------------------------------------------------------
    def refusal_token_ids(self, tokenizer) -> list[int]:
        """First token of each refusal opener, with and without a leading space, deduplicated."""
        ids: list[int] = []
        for opener in self.refusal_openers:
            for variant in (opener, " " + opener):
                tokens = tokenizer.encode(variant, add_special_tokens=False)
                if tokens and tokens[0] not in ids:
                    ids.append(tokens[0])
        if not ids:
            raise ConfigError(f"no refusal-opening tokens could be encoded from {self.refusal_openers!r}")
        return ids

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "FamilyAdapter":
        """Apply per-model settings from the config (keys with value None keep the default)."""
        changes = {}
        for key, value in (overrides or {}).items():
            if value is None or key not in {f.name for f in dataclasses.fields(self)}:
                continue
            changes[key] = tuple(value) if isinstance(value, list) else value
        return dataclasses.replace(self, **changes)


LLAMA = FamilyAdapter(
    name="llama",
    model_types=("llama",),
)
# Mistral's and Mixtral's templates have no system role (v0.1 and v0.2 refuse one): the system
# prompt goes at the top of the user turn.
MISTRAL = FamilyAdapter(
    name="mistral",
    model_types=("mistral",),
    system_role=False,
)
# Phi-3 fuses the attention projections (qkv_proj) and the MLP's gate and up projections
# (gate_up_proj): LoRA adapts the fused layers. The neurons are still the input channels of
# down_proj, the heads the input slices of o_proj.
PHI3 = FamilyAdapter(
    name="phi3",
    model_types=("phi3",),
    lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
)
OLMO2 = FamilyAdapter(
    name="olmo2",
    model_types=("olmo2",),
)
QWEN3 = FamilyAdapter(
    name="qwen3",
    model_types=("qwen3",),
    native_thinking=True,
)
GEMMA2 = FamilyAdapter(
    name="gemma2",
    model_types=("gemma2", "gemma"),
    system_role=False,
)
# Mixture-of-experts families: the attention projections as in their dense siblings, the experts
# fused under mlp.experts (the router is mlp.gate, or mlp.router for PhiMoE, and stays frozen).
MOE_ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MOE_EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def _moe(dense: FamilyAdapter, name: str) -> FamilyAdapter:
    """A mixture-of-experts family: its dense sibling's prompts, fused experts under mlp.experts."""
    return dataclasses.replace(
        dense,
        name=name,
        model_types=(name,),
        experts="mlp.experts",
        lora_targets=MOE_ATTENTION_TARGETS,
        lora_parameters=MOE_EXPERT_PARAMETERS,
    )


QWEN3_MOE = _moe(QWEN3, "qwen3_moe")
MIXTRAL = _moe(MISTRAL, "mixtral")
PHIMOE = _moe(PHI3, "phimoe")
OLMOE = _moe(OLMO2, "olmoe")
ADAPTERS: dict[str, FamilyAdapter] = {
    adapter.name: adapter for adapter in (LLAMA, MISTRAL, PHI3, OLMO2, QWEN3, GEMMA2, QWEN3_MOE, MIXTRAL, PHIMOE, OLMOE)
}


def adapter_for(
    family: str, model_type: str | None = None, overrides: Mapping[str, Any] | None = None
) -> FamilyAdapter:
    """The adapter named by ``family``, or found from the HF ``model_type`` when family is auto."""
    if family and family != "auto":
        if family not in ADAPTERS:
            raise ConfigError(f"unknown model family '{family}'; known: {', '.join(sorted(ADAPTERS))}")
        return ADAPTERS[family].with_overrides(overrides)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter.with_overrides(overrides)
    raise ConfigError(
        f"no adapter for model_type '{model_type}'; set 'family' in the model's config entry "
        f"to one of: {', '.join(sorted(ADAPTERS))}"
    )
