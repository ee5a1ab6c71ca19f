"""Activation dumps: pooled MLP neuron activations and residual states per checkpoint.

The method: docs/method.md#5-refusal-heads (residual states, probes) and
docs/method.md#6-safety-neurons-and-ras (neurons, KL baseline).

One HDF5 file per (model, checkpoint), written by one process to a temporary name beside the
final path and renamed only when complete, so a killed job never leaves a file that looks valid
(the layout is documented in docs/architecture.md, "Activation dumps"). Each input set (an
evaluation prompt set in one prompt mode, with the model's own responses) becomes a group
``/<prompt set>/<mode>``:

- ``neurons`` [n, n_layers, n_neurons]: each neuron's activation at the configured site, pooled
  over the configured tokens (default: the MLP intermediate activation, i.e. the input of the
  down projection, max-pooled over prompt + response; docs/method.md#6-safety-neurons-and-ras);
- ``residual`` [n, n_layers, n_positions, hidden]: the output of each decoder layer (the residual
  stream before the final norm) at named positions of ``rim.positions`` (spans averaged; NaN where
  a prompt lacks the position), for the probes of docs/method.md#5-refusal-heads;
- ``neurons_prompt`` [n, n_layers, n_neurons]: the same pooled over the prompt part of those
  tokens only (no response: what the checkpoint does with inputs every checkpoint shares);
- for math inputs, ``kl_to_base`` [n]: KL(pi_0 || pi_t) of the next-token distributions, from the
  base model's top-k log-probabilities stored in the base dump under ``kl_reference/`` (see
  ``rim.ras.coarse_kl``), by default over the positions that predict the base model's own
  response, teacher-forced into every checkpoint (``kl_positions: answer``).

Each input set is read with the checkpoint's own responses (group ``/<prompt set>/<mode>``) and,
for the fixed-token variants of RAS and the KL on answers, with the base model's responses fed to
the checkpoint (group ``/<prompt set>/<mode>@base_responses``; docs/method.md#ras-inputs).

Activations stream to disk batch by batch, in the order the batches run (longest first); the
``prompt_id`` array gives that order. Memory is the model plus one batch, whatever the number of
prompts.
"""

# The package: settings (the dump's settings, input sets, examples), capture (hooks), dump
# (writing), reading. Everything public is importable from rim.activations.
from rim.activations.settings import (  # noqa: F401
    BASE_RESPONSES_SUFFIX,
    DumpSettings,
    Example,
    FLOAT16_MAX,
    FORMAT_VERSION,
    InputSet,
    KL_POSITIONS,
    NEURON_DTYPES,
    POOLED_TOKENS,
    POOLINGS,
    RESPONSES,
    SITES,
    STRING,
    batches,
    encode_examples,
    group_name,
    log,
)
from rim.activations.capture import (  # noqa: F401
    Capture,
    batch_tensors,
    shared_prefix_length,
    site_module_names,
)
from rim.activations.dump import (  # noqa: F401
    KLReference,
    dump_activations,
    read_kl_reference,
    remove_stale_temporaries,
)
from rim.activations.reading import (  # noqa: F401
    ActivationSet,
    file_size_mb,
    input_set_names,
    open_dump,
    read_input_set,
)

# ----- which input sets a checkpoint's dump holds -------------------------------------------------
# Planned without heavy imports in rim.planning (the Snakefile reads it); kept here by name.
from rim.planning import dump_input_keys, dump_plan, uses_base_responses  # noqa: F401

# The variants of RAS's inputs (docs/method.md#ras-inputs), config key ras.inputs: which tokens the
# activations of the safety and math inputs are pooled over.
RAS_INPUTS = {
    "own_response": "prompt + the checkpoint's own response (the paper's way)",
    "base_response": "prompt + the base model's response, teacher-forced into the checkpoint",
    "prompt_only": "the prompt alone",
}
