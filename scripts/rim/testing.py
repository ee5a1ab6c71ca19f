"""Tiny random models of each supported family, built offline, for tests and the CI pipeline.

Each has a real Hugging Face config class, a byte-level BPE tokenizer trained on the fly (so any
text encodes), and a chat template in the style of its family: ChatML with a default system
prompt (SmolLM2/Llama style), ChatML with ``enable_thinking`` (Qwen3 style), Gemma's turns
without a system role, Phi-3's ``<|user|>``/``<|end|>`` turns, OLMo-2's Tulu turns and
Mistral's ``[INST]`` turns; the mixture-of-experts families (Qwen3-MoE, Mixtral, PhiMoE, OLMoE)
use their dense siblings' templates. The whole pipeline runs on them in seconds.

A random model's attention is nearly uniform, so which key a head attends to most is an accident
of its weights; ``plant_offset_head`` gives one head a known pattern (attend to the token a fixed
number of places back, whatever the text) for tests that need an attention head to behave.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen3 style: thinking is on unless enable_thinking is false, which writes an empty think block.
QWEN3_STYLE_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% endif %}{% endif %}"
)

GEMMA_STYLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Phi-3.5-mini-instruct's turns: <|end|> closes each, the end-of-text token ends the conversation.
PHI3_STYLE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# OLMo-2-Instruct's (Tulu) turns: an assistant message ends with the end-of-text token.
OLMO2_STYLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)

# Mistral-7B-Instruct's [INST] turns, without a system role.
MISTRAL_STYLE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

FAMILIES = {
    "llama": {
        "template": CHATML_TEMPLATE,
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": "<|im_start|>",
        "eos": "<|im_end|>",
    },
    "qwen3": {
        "template": QWEN3_STYLE_TEMPLATE,
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        "bos": None,
        "eos": "<|im_end|>",
    },
    "gemma2": {
        "template": GEMMA_STYLE_TEMPLATE,
        "special": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<end_of_turn>",
    },
    "phi3": {
        "template": PHI3_STYLE_TEMPLATE,
        "special": ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        "bos": None,
        "eos": "<|endoftext|>",
        # Generation stops at the end of the turn, as the real model's generation config says.
        "stop": "<|end|>",
    },
    "olmo2": {
        "template": OLMO2_STYLE_TEMPLATE,
        "special": ["<|pad|>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>"],
        "bos": "<|endoftext|>",
        "eos": "<|endoftext|>",
    },
    "mistral": {
        "template": MISTRAL_STYLE_TEMPLATE,
        "special": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        "bos": "<s>",
        "eos": "</s>",
    },
}
# The mixture-of-experts families use their dense siblings' chat templates, as the hub models do.
for _moe, _dense in (("qwen3_moe", "qwen3"), ("mixtral", "mistral"), ("phimoe", "phi3"), ("olmoe", "olmo2")):
    FAMILIES[_moe] = FAMILIES[_dense]
MOE_FAMILIES = ("qwen3_moe", "mixtral", "phimoe", "olmoe")
# family -> (config class, the key of an expert's width, the key of the number of experts)
MOE_CONFIGS = {
    "qwen3_moe": ("Qwen3MoeConfig", "moe_intermediate_size", "num_experts"),
    "mixtral": ("MixtralConfig", "intermediate_size", "num_local_experts"),
    "phimoe": ("PhimoeConfig", "intermediate_size", "num_local_experts"),
    "olmoe": ("OlmoeConfig", "intermediate_size", "num_experts"),
}

_CORPUS = [
    "I can't help with that request. I'm sorry, but I cannot assist with this.",
    "Sorry, I won't help with this because it could hurt people.",
    "Here is a helpful answer. Let me think step by step. The answer is 42.",
    "How do I kill a Python process? Write a story. Explain how vaccines work.",
    "Tom buys 3 packs of 4 pens, so he has 3 * 4 = 12 pens. #### 12",
    "0 1 2 3 4 5 6 7 8 9 10 + - * / = % . , ? ! ( ) : ;",
    "system user assistant model You are a helpful assistant.",
]


def build_tokenizer(family: str, vocab_size: int = 512):
    """A byte-level BPE tokenizer with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["special"][0],
    )
    tokenizer.chat_template = spec["template"]
    return tokenizer


def build_config(
    family: str,
    vocab_size: int,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    experts: int = 4,
    experts_per_token: int = 2,
):
    """A tiny config of ``family``; mixture-of-experts families get ``experts`` experts of
    ``2 * hidden // experts`` channels each, ``experts_per_token`` of them routed per token."""
    from transformers import Gemma2Config, LlamaConfig, MistralConfig, Olmo2Config, Phi3Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen3":
        return Qwen3Config(**common)
    if family == "gemma2":
        return Gemma2Config(
            **common, query_pre_attn_scalar=hidden // heads, sliding_window=256, attn_implementation="eager"
        )
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "olmo2":
        return Olmo2Config(**common)
    if family in MOE_CONFIGS:
        # Mixture of experts: the same total width as the dense models' MLP (experts x channels).
        import transformers

        class_name, width_key, experts_key = MOE_CONFIGS[family]
        # Token ids of the real vocabularies are left out; make_tiny_model sets them.
        moe = {key: value for key, value in common.items() if key not in (width_key, "head_dim")}
        moe.update({"bos_token_id": None, "eos_token_id": None, "pad_token_id": None})
        if family == "qwen3_moe":
            moe["head_dim"] = common["head_dim"]
        return getattr(transformers, class_name)(
            **moe, **{width_key: 2 * hidden // experts, experts_key: experts}, num_experts_per_tok=experts_per_token
        )
    if family == "phi3":
        # Phi-3's config defaults name token ids of its 32k vocabulary; make_tiny_model sets them.
        ids = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
        return Phi3Config(**{key: value for key, value in common.items() if key != "head_dim"}, **ids)
    raise ValueError(f"no tiny model for family '{family}'")


def make_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    offset_head: tuple[int, int] | None = None,
    offset: int = 1,
    experts: int = 4,
    experts_per_token: int = 2,
):
    """Save a tiny random model and tokenizer of ``family`` into ``out_dir``; return the path.

    ``offset_head=(layer, head)``: that head attends to the token ``offset`` places back
    (``plant_offset_head``); the model then has biases on its attention projections.
    ``experts``, ``experts_per_token``: the mixture-of-experts families' routing.
    """
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(family)
    config = build_config(
        family,
        len(tokenizer),
        layers=layers,
        hidden=hidden,
        heads=heads,
        experts=experts,
        experts_per_token=experts_per_token,
    )
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    if offset_head is not None:
        config.attention_bias = True  # the planted head's query and key are biases
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if offset_head is not None:
        plant_offset_head(model, *offset_head, offset=offset)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if FAMILIES[family].get("stop"):
        stop = tokenizer.convert_tokens_to_ids(FAMILIES[family]["stop"])
        model.generation_config.eos_token_id = [stop, tokenizer.eos_token_id]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def plant_offset_head(model, layer: int, head: int, offset: int = 1, *, margin: float = 8.0) -> None:
    """Make one head attend from every position to the token ``offset`` places back, whatever the text.

    The head's query and key become constants on the faster half of the rotary frequencies
    (projection weights zeroed there, biases set; the model needs ``attention_bias``), with the
    query turned back by ``offset`` steps of each frequency. After the rotary embedding the score
    of a key ``d`` places back is ``c * sum_i cos(theta_i * (d - offset))`` for every prompt:
    largest at ``d = offset``, by at least ``margin`` logits over any other key within
    ``max_position_embeddings`` (Gemma 2's logit soft-capping keeps that order, not the margin).
    The other heads of its key-value group share its keys, so they also see constant keys on
    those dimensions. Checked on a probe sequence before returning (RuntimeError if it fails).
    """
    import numpy as np

    attention = model.model.layers[layer].self_attn
    q_proj, k_proj = attention.q_proj, attention.k_proj
    if q_proj.bias is None or k_proj.bias is None:
        raise ValueError("plant_offset_head needs biases on the query and key projections (config.attention_bias)")
    if getattr(attention, "q_norm", None) is not None or getattr(attention, "k_norm", None) is not None:
        raise ValueError(
            "plant_offset_head: a model that normalizes queries and keys (Qwen3) would undo the planted scale"
        )
    head_dim = attention.head_dim
    kv_head = head // attention.num_key_value_groups
    half = head_dim // 2
    theta = model.model.rotary_emb.inv_freq.double().cpu().numpy()[: half // 2]  # the faster half
    # Rotary pairs are (i, i + half): a key of (a, 0) and a query of a * (cos, -sin)(offset * theta)
    # score a^2 * cos(theta * (d - offset)) for a key d places back.
    distances = np.arange(model.config.max_position_embeddings)
    profile = np.cos(np.outer(distances - offset, theta)).sum(axis=1)
    gap = profile[offset] - np.delete(profile, offset).max()
    if gap <= 0:
        raise ValueError(f"plant_offset_head: rotary frequencies {theta} cannot single out offset {offset}")
    scale = float(np.sqrt(margin / (gap * attention.scaling)))
    q_rows = slice(head * head_dim, (head + 1) * head_dim)
    q_proj.weight[q_rows] = 0.0
    q_proj.bias[q_rows] = 0.0
    for pair, angle in enumerate(offset * theta):
        k_proj.weight[[kv_head * head_dim + pair, kv_head * head_dim + half + pair]] = 0.0
        k_proj.bias[kv_head * head_dim + pair] = scale
        k_proj.bias[kv_head * head_dim + half + pair] = 0.0
        q_proj.bias[head * head_dim + pair] = scale * np.cos(angle)
        q_proj.bias[head * head_dim + half + pair] = -scale * np.sin(angle)
    _check_offset_head(model, layer, head, offset)


@torch.no_grad()
def _check_offset_head(model, layer: int, head: int, offset: int, length: int = 48) -> None:
    previous = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation("eager")  # the only implementation that returns attention weights
    try:
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (1, length), generator=generator)
        weights = model(input_ids=ids, output_attentions=True).attentions[layer][0, head]
    finally:
        if previous is not None:
            model.set_attn_implementation(previous)
    found = weights[offset:].argmax(dim=-1)
    expected = torch.arange(length - offset)
    if not torch.equal(found, expected):
        raise RuntimeError(f"the head planted at layer {layer}, head {head} does not attend {offset} tokens back")
