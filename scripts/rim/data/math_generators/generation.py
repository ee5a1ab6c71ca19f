"""The generators: word problems from the templates, long chain-of-thought variants, literal
counterfactuals and MATH401-style arithmetic; GENERATORS names them all."""

from __future__ import annotations

import functools
import random
from fractions import Fraction
from typing import Callable

import pandas as pd
from rim.data.math_generators.numbers import (
    COLUMNS,
    _MAX_CONSECUTIVE_COLLISIONS,
    _evaluate,
    _format,
    _operand,
    normalize_number,
)

# Importing the template modules registers their templates in _WORD_TEMPLATES.
from rim.data.math_generators import gsm8k_templates, hard_templates, multiarith_templates  # noqa: F401
from rim.data.math_generators.builder import (
    _Builder,
    _NAMES,
    _WORD_TEMPLATES,
    _WordProblem,
)


# ---------------------------------------------------------------------------
# Word-problem generation
# ---------------------------------------------------------------------------


def _check_size(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


@functools.lru_cache(maxsize=32)
def _word_problems(set_name: str, n: int, seed: int) -> tuple[_WordProblem, ...]:
    """``n`` unique problems of one set; cached because three sets share GSM8k's."""
    _check_size(n)
    # A string seed is hashed with SHA-512 by random.seed, so it is stable
    # across processes, and each set draws its own stream.
    rng = random.Random(f"{set_name}-{seed}")
    templates, names = _WORD_TEMPLATES[set_name], _NAMES[set_name]
    problems: list[_WordProblem] = []
    seen: set[str] = set()
    collisions = 0
    while len(problems) < n:
        template = rng.choice(templates)
        builder = _Builder(rng, names)
        template(builder)
        problem = builder.build(template.__name__.lstrip("_"))
        # GSM8k-style contexts must be unique too: the literal counterfactual
        # asks its questions about them.
        keys = {problem.question, problem.context} if set_name == "gsm8k_style" else {problem.question}
        if keys & seen:
            collisions += 1
            if collisions > _MAX_CONSECUTIVE_COLLISIONS:
                raise RuntimeError(f"{set_name}: cannot make {n} distinct problems")
            continue
        collisions = 0
        seen.update(keys)
        problems.append(problem)
    return tuple(problems)


def _frame(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS)).astype(str)


def _problem_id(set_name: str, seed: int, index: int) -> str:
    return f"{set_name}-{seed}-{index:05d}"


def _word_problem_frame(set_name: str, n: int, seed: int) -> pd.DataFrame:
    rows = []
    for index, problem in enumerate(_word_problems(set_name, n, seed)):
        answer = normalize_number(str(problem.answer))
        rows.append(
            (
                _problem_id(set_name, seed, index),
                problem.question,
                "\n".join(step.line for step in problem.steps),
                f"#### {answer}",
                answer,
            )
        )
    return _frame(rows)


def gsm8k_style(n: int, seed: int) -> pd.DataFrame:
    """GSM8k-like grade-school word problems needing 2-5 arithmetic steps."""
    return _word_problem_frame("gsm8k_style", n, seed)


def multiarith_style(n: int, seed: int) -> pd.DataFrame:
    """Easy two-step MultiArith-like evaluation problems (templates disjoint from GSM8k's)."""
    return _word_problem_frame("multiarith_style", n, seed)


def multistep_hard(n: int, seed: int) -> pd.DataFrame:
    """Harder 4-7 step evaluation problems (percentages, rates, remainders, combined work)."""
    return _word_problem_frame("multistep_hard", n, seed)


# ---------------------------------------------------------------------------
# Long chain-of-thought variants
# ---------------------------------------------------------------------------

# The paper's three effort-minimising patterns, injected into the "target" CoTs
# where the "control" CoTs re-check their work.
EFFORT_MINIMISING_PHRASES: dict[str, tuple[str, ...]] = {
    "confirmatory_reasoning": (
        "This matches what I expected, so there is no need to check it again.",
        "That looks right to me, so I won't bother verifying it.",
        "This is what I assumed it would be, so checking again is unnecessary.",
        "The number feels right, so I'll trust it and move on without checking.",
    ),
    "heuristic_reliance": (
        "Problems like this usually just need the obvious operation, so I'll go with that.",
        "I've seen this kind of question before; the usual shortcut works here.",
        "These questions normally follow the same pattern, so I'll apply it without thinking too hard.",
        "My first instinct is usually right on problems like this, so I'll go with it.",
    ),
    "instruction_deviation": (
        "I'll skip the full explanation and just give the number; that's close enough to what was asked.",
        "There's no need to show every detail the question wants, so I'll keep this short.",
        "I won't lay out the remaining reasoning as asked; the result is what matters.",
        "Rather than explain everything as requested, I'll just state the result.",
    ),
}
_ALL_EFFORT_MINIMISING = tuple(p for phrases in EFFORT_MINIMISING_PHRASES.values() for p in phrases)

_CAREFUL_OPENINGS = (
    "I'll work through it step by step and check each result before moving on.",
    "I'll solve it one step at a time and verify every intermediate result.",
    "Let me go carefully, computing each quantity and then checking it.",
)
_CAREFUL_RECHECKS = (
    "Let me double-check by working backwards: {check}. Yes, that is consistent.",
    "To verify this, I reverse the operation: {check}. That is correct.",
    "Checking this result again: {check}, which agrees, so this step is right.",
)
_CAREFUL_CLOSINGS = (
    "Every step has been checked, and the question is fully answered, so the answer is {answer}.",
    "All intermediate results are verified and they answer what was asked, so the answer is {answer}.",
)

LONG_COT_VARIANTS = ("control", "target")


def _long_cot_text(problem: _WordProblem, variant: str, rng: random.Random) -> str:
    careful = variant == "control"
    lines = [
        f"Let me restate the goal: {problem.ask}" if careful else f"The question is: {problem.ask}",
        rng.choice(_CAREFUL_OPENINGS) if careful else rng.choice(EFFORT_MINIMISING_PHRASES["heuristic_reliance"]),
    ]
    for number, step in enumerate(problem.steps, start=1):
        lines.append(f"Step {number}: {step.line}")
        if careful:
            lines.append(rng.choice(_CAREFUL_RECHECKS).format(check=step.recheck))
        else:
            lines.append(rng.choice(_ALL_EFFORT_MINIMISING))
    if careful:
        lines.append(rng.choice(_CAREFUL_CLOSINGS).format(answer=problem.answer))
    else:
        lines.append(rng.choice(EFFORT_MINIMISING_PHRASES["instruction_deviation"]))
        lines.append(f"So the answer is {problem.answer}.")
    return "\n".join(lines)


def long_cot(n: int, seed: int, variant: str) -> pd.DataFrame:
    """The GSM8k-style problems with long chains of thought.

    ``variant="control"`` restates the goal and explicitly re-checks every
    step; ``variant="target"`` makes the same computations but replaces the
    re-checks with effort-minimising phrases (:data:`EFFORT_MINIMISING_PHRASES`).
    Problems, base ids and answers are those of ``gsm8k_style(n, seed)``.
    """
    if variant not in LONG_COT_VARIANTS:
        raise ValueError(f"unknown long-CoT variant {variant!r}; allowed: {', '.join(LONG_COT_VARIANTS)}")
    rng = random.Random(f"long_cot_{variant}-{seed}")
    rows = []
    for index, problem in enumerate(_word_problems("gsm8k_style", n, seed)):
        answer = normalize_number(str(problem.answer))
        rows.append(
            (
                f"{_problem_id('gsm8k_style', seed, index)}-{variant}",
                problem.question,
                _long_cot_text(problem, variant, rng),
                f"#### {answer}",
                answer,
            )
        )
    return _frame(rows)


# ---------------------------------------------------------------------------
# Literal counterfactual
# ---------------------------------------------------------------------------


def literal_counterfactual(n: int, seed: int) -> pd.DataFrame:
    """The GSM8k-style contexts, asking for a number the text states verbatim.

    The paper's counterfactual: same surface form as the math data, but no
    reasoning is needed to answer.
    """
    rng = random.Random(f"literal_counterfactual-{seed}")
    rows = []
    for index, problem in enumerate(_word_problems("gsm8k_style", n, seed)):
        fact = rng.choice(problem.facts)
        answer = normalize_number(str(fact.value))
        rows.append(
            (
                f"{_problem_id('gsm8k_style', seed, index)}-literal",
                f"{problem.context} According to the text, {fact.ask}?",
                f'The text states: "{fact.sentence}" So the answer is {answer}.',
                f"#### {answer}",
                answer,
            )
        )
    return _frame(rows)


# ---------------------------------------------------------------------------
# MATH401-style arithmetic
# ---------------------------------------------------------------------------

_Expression = tuple[str, list[str]]  # (expression as asked, reasoning expressions)


def _show(expression: str) -> str:
    """``expression = value``, computed exactly."""
    return f"{expression} = {_format(_evaluate(expression))}"


def _arith_add(r: random.Random) -> _Expression:
    e = f"{r.randint(10, 9999)} + {r.randint(10, 9999)}"
    return e, [_show(e)]


def _arith_subtract(r: random.Random) -> _Expression:
    e = f"{r.randint(10, 999)} - {r.randint(10, 999)}"  # may go negative
    return e, [_show(e)]


def _arith_multiply(r: random.Random) -> _Expression:
    e = f"{r.randint(2, 99)} * {r.randint(2, 99)}"
    return e, [_show(e)]


def _arith_divide_exact(r: random.Random) -> _Expression:
    divisor = r.randint(2, 30)
    e = f"{divisor * r.randint(2, 60)} / {divisor}"
    return e, [_show(e)]


def _arith_divide_decimal(r: random.Random) -> _Expression:
    while True:
        divisor = r.choice([2, 4, 5, 8, 20, 25])
        dividend = r.randint(3, 200)
        if dividend % divisor:
            e = f"{dividend} / {divisor}"
            return e, [_show(e)]


def _arith_precedence(r: random.Random) -> _Expression:
    a, b, c = r.randint(2, 99), r.randint(2, 50), r.randint(2, 12)
    if r.random() < 0.5:
        e = f"{a} + {b} * {c}"
        return e, [_show(f"{b} * {c}"), _show(f"{a} + {_format(_evaluate(f'{b} * {c}'))}")]
    e = f"{b} * {c} - {a}"
    return e, [_show(f"{b} * {c}"), _show(f"{_format(_evaluate(f'{b} * {c}'))} - {a}")]


def _arith_parentheses(r: random.Random) -> _Expression:
    a, b, c = r.randint(2, 60), r.randint(2, 60), r.randint(2, 12)
    inner = f"{a} + {b}" if r.random() < 0.5 else f"{a} - {b}"
    e = f"({inner}) * {c}"
    return e, [_show(inner), _show(f"{_operand(_evaluate(inner))} * {c}")]


def _arith_parentheses_divide(r: random.Random) -> _Expression:
    divisor, quotient = r.randint(2, 12), r.randint(2, 30)
    a = r.randint(1, divisor * quotient - 1)
    inner = f"{a} + {divisor * quotient - a}"
    e = f"({inner}) / {divisor}"
    return e, [_show(inner), _show(f"{_format(_evaluate(inner))} / {divisor}")]


def _arith_power(r: random.Random) -> _Expression:
    base = r.randint(2, 12)
    exponent = r.randint(2, 3) if base > 5 else r.randint(2, 6)
    e = f"{base}^{exponent}"
    return e, [_show(e)]


def _arith_negative_power(r: random.Random) -> _Expression:
    e = f"(-{r.randint(2, 9)})^{r.randint(2, 3)}"
    return e, [_show(e)]


def _arith_negatives(r: random.Random) -> _Expression:
    a, b = r.randint(1, 99), r.randint(1, 99)
    e = r.choice([f"-{a} - {b}", f"-{a} * {b}", f"{a} - (-{b})", f"-{a} + {b}", f"-{a * b} / {b}"])
    return e, [_show(e)]


def _arith_decimals(r: random.Random) -> _Expression:
    x = _format(Fraction(r.randint(1, 999), 10 ** r.randint(1, 2)))
    y = _format(Fraction(r.randint(1, 999), 10 ** r.randint(1, 2)))
    e = f"{x} {r.choice(['+', '-'])} {y}" if r.random() < 0.6 else f"{x} * {r.randint(2, 12)}"
    return e, [_show(e)]


def _arith_power_plus(r: random.Random) -> _Expression:
    base, c = r.randint(2, 15), r.randint(1, 99)
    e = f"{base}^2 + {c}"
    return e, [_show(f"{base}^2"), _show(f"{_format(_evaluate(f'{base}^2'))} + {c}")]


def _arith_percent(r: random.Random) -> _Expression:
    percent = r.choice([5, 10, 12.5, 15, 20, 25, 30, 40, 50, 60, 75, 120])
    of = r.choice([8, 16, 20, 24, 40, 60, 80, 120, 160, 200, 240, 360, 400, 480, 500])
    p = _format(Fraction(str(percent)))
    e = f"{of} * {p} / 100"
    return f"{p}% of {of}", [f"{p}% of {of} = {_show(e)}"]


def _arith_square_root(r: random.Random) -> _Expression:
    root = r.randint(2, 30)
    return f"sqrt({root * root})", [_show(f"{root} * {root}"), f"sqrt({root * root}) = {root}"]


_MATH401_KINDS: tuple[Callable[[random.Random], _Expression], ...] = (
    _arith_add,
    _arith_subtract,
    _arith_multiply,
    _arith_divide_exact,
    _arith_divide_decimal,
    _arith_precedence,
    _arith_parentheses,
    _arith_parentheses_divide,
    _arith_power,
    _arith_negative_power,
    _arith_negatives,
    _arith_decimals,
    _arith_power_plus,
    _arith_percent,
    _arith_square_root,
)
_MATH401_PHRASINGS = (
    "What is {e}?",
    "Calculate {e}.",
    "{e} = ?",
    "{e}",
    "Compute {e}.",
    "Evaluate {e}.",
    "Find the value of {e}.",
)


def math401_style(n: int, seed: int) -> pd.DataFrame:
    """Bare arithmetic expressions like MATH401 (+ - * / ^, parentheses, negatives, decimals, %)."""
    _check_size(n)
    rng = random.Random(f"math401_style-{seed}")
    rows, seen, collisions = [], set(), 0
    while len(rows) < n:
        expression, reasoning = rng.choice(_MATH401_KINDS)(rng)
        phrasing = rng.choice(_MATH401_PHRASINGS)
        # Key on the expression so one sum is not asked twice in two phrasings.
        if expression in seen:
            collisions += 1
            if collisions > _MAX_CONSECUTIVE_COLLISIONS:
                raise RuntimeError(f"math401_style: cannot make {n} distinct problems")
            continue
        collisions = 0
        seen.add(expression)
        # Each kind's last reasoning line ends in the exactly computed result.
        answer = normalize_number(reasoning[-1].rsplit("= ", 1)[1])
        rows.append(
            (
                _problem_id("math401_style", seed, len(rows)),
                phrasing.format(e=expression),
                "\n".join(reasoning),
                f"#### {answer}",
                answer,
            )
        )
    return _frame(rows)


GENERATORS: dict[str, Callable[[int, int], pd.DataFrame]] = {
    "gsm8k_style": gsm8k_style,
    "long_cot_control": functools.partial(long_cot, variant="control"),
    "long_cot_target": functools.partial(long_cot, variant="target"),
    "math401_style": math401_style,
    "literal_counterfactual": literal_counterfactual,
    "multiarith_style": multiarith_style,
    "multistep_hard": multistep_hard,
}
