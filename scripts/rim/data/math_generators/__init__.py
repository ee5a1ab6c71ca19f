"""Deterministic generators for the math fine-tuning and evaluation sets.

The paper fine-tunes models on math (GSM8k, MATH401, long-CoT GSM8k variants)
and shows that this makes aligned models comply more with harmful requests
("reasoning-induced misalignment"). No dataset hub is reachable from the
workflow, so these generators build datasets of the same shapes from a seed,
in plain Python (``random.Random``) and pandas.

Every generator returns a :class:`pandas.DataFrame` with one row per problem
and exactly these string columns, in this order:

``problem_id``
    ``<set>-<seed>-<index:05d>``, e.g. ``gsm8k_style-0-00012``. The derived sets
    reuse the GSM8k-style id and add a suffix: ``-control`` / ``-target``
    (long CoT) and ``-literal`` (literal counterfactual).
``question``
    The problem text shown to the model. Unique within a set.
``reasoning``
    The worked solution, one short step per line. Each computation is written
    out as ``a op b = c`` and was evaluated in Python (exact fractions), so the
    last ``= X`` of a word problem's reasoning is its answer.
``final``
    Exactly ``#### <answer>`` (the GSM8k answer marker).
``answer``
    The answer, normalised by :func:`normalize_number`.

Answer normalisation (:func:`normalize_number`, also used to compare extracted
model answers): remove all whitespace; treat commas as thousands separators
(``"1,234"`` -> ``"1234"``; commas must group digits by three); map the Unicode
minus sign to ``-``; drop a leading ``+``; drop leading zeros of the integer
part and trailing zeros of the fraction, and the decimal point when nothing is
left after it (``"2.50"`` -> ``"2.5"``, ``"3.0"`` -> ``"3"``, ``".5"`` ->
``"0.5"``); write zero without a sign (``"-0"`` -> ``"0"``); keep a leading
``-`` otherwise. Anything else (words, units, exponents, fractions like
``1/2``) raises ``ValueError("not a number: ...")``.

Sets (see :data:`GENERATORS`): ``gsm8k_style`` (2-5 step word problems),
``long_cot_control`` / ``long_cot_target`` (the same problems with long chains
of thought; the target variant injects effort-minimising phrases in place of
the re-checks), ``math401_style`` (bare arithmetic), ``literal_counterfactual``
(the GSM8k-style contexts, asking for a number stated verbatim),
``multiarith_style`` (easy evaluation set) and ``multistep_hard`` (4-7 step
evaluation set). The two evaluation sets use templates and names disjoint from
the training sets so that no evaluation question equals a training question.
"""

# The package's modules: numbers (normalisation, exact arithmetic), builder (the word-problem
# builder), the three template families, generation (the generators and GENERATORS).
from rim.data.math_generators.numbers import (  # noqa: F401
    COLUMNS,
    _MAX_CONSECUTIVE_COLLISIONS,
    normalize_number,
)
from rim.data.math_generators.builder import (  # noqa: F401
    _WORD_TEMPLATES,
)
from rim.data.math_generators.generation import (  # noqa: F401
    EFFORT_MINIMISING_PHRASES,
    GENERATORS,
    LONG_COT_VARIANTS,
    _word_problems,
    gsm8k_style,
    literal_counterfactual,
    long_cot,
    math401_style,
    multiarith_style,
    multistep_hard,
)
