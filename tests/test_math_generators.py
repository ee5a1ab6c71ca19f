"""Tests for the deterministic math dataset generators (rim.data.math_generators)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import rim
from rim.data import math_generators as mg

N = 400
WORD_SETS = ["gsm8k_style", "multiarith_style", "multistep_hard"]
# "a op b [op c] = result", with negatives possibly in parentheses.
_NUM = r"\(?-?\d+(?:\.\d+)?\)?"
COMPUTATION = re.compile(rf"((?:{_NUM}\s*[-+*/^]\s*)+{_NUM})\s*=\s*(-?\d+(?:\.\d+)?)")
LAST_RESULT = re.compile(r"=\s*(-?\d+(?:\.\d+)?)")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {name: make(N, 7) for name, make in mg.GENERATORS.items()}


def _exact(expression: str) -> Fraction:
    """Independent exact evaluation (not the module's evaluator)."""
    python = re.sub(r"(\d+(?:\.\d+)?)", r"Fraction('\1')", expression.replace("^", "**"))
    return eval(python, {"Fraction": Fraction, "__builtins__": {}})  # noqa: S307 - regex-restricted


def _first_words(questions: pd.Series, k: int = 6) -> Counter:
    return Counter(" ".join(q.split()[:k]) for q in questions)


# --- shape, types, determinism -------------------------------------------------


def test_generator_names():
    assert set(mg.GENERATORS) == {
        "gsm8k_style",
        "long_cot_control",
        "long_cot_target",
        "math401_style",
        "literal_counterfactual",
        "multiarith_style",
        "multistep_hard",
    }


@pytest.mark.parametrize("name", sorted(mg.GENERATORS))
def test_columns_types_and_rows(frames, name):
    df = frames[name]
    assert list(df.columns) == ["problem_id", "question", "reasoning", "final", "answer"]
    assert len(df) == N
    for column in df.columns:
        assert pd.api.types.is_string_dtype(df[column]), column
        assert df[column].map(type).eq(str).all(), column
        assert df[column].str.len().gt(0).all(), column


@pytest.mark.parametrize("name", sorted(mg.GENERATORS))
def test_same_seed_same_frame_and_other_seed_differs(name):
    make = mg.GENERATORS[name]
    first = make(150, 3)
    mg._word_problems.cache_clear()  # rebuild from scratch, not from the cache
    assert_frame_equal(first, make(150, 3))
    other = make(150, 4)
    assert not first["question"].equals(other["question"])
    assert len(set(first["question"]) & set(other["question"])) < 15


@pytest.mark.parametrize("name", sorted(mg.GENERATORS))
def test_smaller_set_is_a_prefix_of_a_larger_one(name):
    """Growing n only appends problems, so configs with different sizes agree."""
    make = mg.GENERATORS[name]
    assert_frame_equal(make(50, 2), make(120, 2).iloc[:50])


def test_deterministic_across_processes(frames):
    """A fresh interpreter with another hash seed produces byte-identical data."""

    def digest(dfs):
        return hashlib.sha256("".join(df.to_csv(index=False) for df in dfs).encode()).hexdigest()

    code = (
        "import hashlib; from rim.data import math_generators as mg;"
        f"print(hashlib.sha256(''.join(mg.GENERATORS[k]({N}, 7).to_csv(index=False) "
        f"for k in {sorted(mg.GENERATORS)!r}).encode()).hexdigest())"
    )
    scripts = str(Path(rim.__file__).resolve().parents[1])  # the folder that holds the package
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": scripts}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(frames[k] for k in sorted(mg.GENERATORS))


def test_problem_ids(frames):
    assert frames["gsm8k_style"]["problem_id"].iloc[12] == "gsm8k_style-7-00012"
    assert frames["math401_style"]["problem_id"].iloc[0] == "math401_style-7-00000"
    assert frames["multistep_hard"]["problem_id"].iloc[399] == "multistep_hard-7-00399"
    for name, df in frames.items():
        assert df["problem_id"].is_unique, name


def test_empty_and_invalid_sizes():
    for name, make in mg.GENERATORS.items():
        empty = make(0, 1)
        assert len(empty) == 0 and list(empty.columns) == list(mg.COLUMNS), name
        with pytest.raises(ValueError):
            make(-1, 1)


# --- answers and reasoning -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(mg.GENERATORS))
def test_unique_questions(name):
    df = mg.GENERATORS[name](2000, 11)
    assert df["question"].is_unique


@pytest.mark.parametrize("name", sorted(mg.GENERATORS))
def test_final_marker_and_normalised_answers(frames, name):
    df = frames[name]
    assert (df["final"] == "#### " + df["answer"]).all()
    for answer in df["answer"]:
        float(answer)
        assert mg.normalize_number(answer) == answer


@pytest.mark.parametrize("name", ["gsm8k_style", "math401_style", "multiarith_style", "multistep_hard"])
def test_last_computation_is_the_answer(frames, name):
    for reasoning, answer in zip(frames[name]["reasoning"], frames[name]["answer"]):
        assert LAST_RESULT.findall(reasoning)[-1] == answer, reasoning


@pytest.mark.parametrize(
    "name",
    ["gsm8k_style", "math401_style", "multiarith_style", "multistep_hard", "long_cot_control", "long_cot_target"],
)
def test_every_written_computation_is_correct(frames, name):
    checked = 0
    for reasoning in frames[name]["reasoning"]:
        for line in reasoning.splitlines():
            remainder = re.search(r"(\d+) / (\d+) = (\d+) with (\d+) left over", line)
            if remainder:  # "45 / 6 = 7 with 3 left over" is a division with remainder
                total, size, groups, rest = map(int, remainder.groups())
                assert groups * size + rest == total and 0 <= rest < size, line
                continue
            for expression, result in COMPUTATION.findall(line):
                assert _exact(expression) == Fraction(result), line
                checked += 1
    assert checked >= N


def test_gsm8k_reasoning_is_short_and_stepwise(frames):
    reasoning = frames["gsm8k_style"]["reasoning"]
    lines = reasoning.str.count("\n") + 1
    assert lines.between(2, 5).all()
    assert reasoning.str.split().str.len().mean() < 70
    assert (reasoning.str.split().str.len() < 90).all()
    assert all(LAST_RESULT.search(line) for text in reasoning for line in text.splitlines())


def test_answers_are_integers_in_word_problems(frames):
    for name in WORD_SETS + ["literal_counterfactual", "long_cot_control"]:
        assert frames[name]["answer"].str.fullmatch(r"-?\d+").all(), name


def test_gsm8k_uses_many_templates():
    assert len(mg._WORD_TEMPLATES["gsm8k_style"]) >= 25
    used = Counter(p.template for p in mg._word_problems("gsm8k_style", 2000, 5))
    assert len(used) == len(mg._WORD_TEMPLATES["gsm8k_style"])
    # Diversity as seen from outside: many distinct openings.
    assert len(_first_words(mg.gsm8k_style(2000, 5)["question"], 3)) > 200


def test_math401_mixes_operations(frames):
    questions = " ".join(frames["math401_style"]["question"])
    for token in ["+", " - ", "*", "/", "^", "(", "%", "-"]:
        assert token in questions, token
    answers = frames["math401_style"]["answer"]
    assert answers.str.contains(r"\.").any()  # some decimals
    assert answers.str.startswith("-").any()  # some negatives
    assert frames["math401_style"]["reasoning"].str.count("\n").le(1).all()  # one or two lines


def test_math401_answers_match_an_independent_evaluation(frames):
    wrappers = re.compile(r"^(?:What is |Calculate |Compute |Evaluate |Find the value of )?(.*?)(?:\?| = \?|\.)?$")
    checked = 0
    for question, answer in zip(frames["math401_style"]["question"], frames["math401_style"]["answer"]):
        expression = wrappers.match(question).group(1)
        if "%" in expression or "sqrt" in expression:
            continue
        assert _exact(expression) == Fraction(answer), question
        checked += 1
    assert checked > N // 2


# --- long chain of thought -----------------------------------------------------


def test_long_cot_shares_problems_with_gsm8k(frames):
    base = frames["gsm8k_style"]
    for variant in ["control", "target"]:
        cot = frames[f"long_cot_{variant}"]
        assert (cot["problem_id"] == base["problem_id"] + f"-{variant}").all()
        assert (cot["question"] == base["question"]).all()
        assert (cot["answer"] == base["answer"]).all()
        assert (cot["final"] == base["final"]).all()
        # Same computations, longer text.
        for short, long in zip(base["reasoning"], cot["reasoning"]):
            assert all(line in long for line in short.splitlines())
            assert len(long) > len(short)
    assert (frames["long_cot_control"]["reasoning"] != frames["long_cot_target"]["reasoning"]).all()


def test_long_cot_injected_phrases(frames):
    phrases = [p for group in mg.EFFORT_MINIMISING_PHRASES.values() for p in group]
    assert set(mg.EFFORT_MINIMISING_PHRASES) == {
        "confirmatory_reasoning",
        "heuristic_reliance",
        "instruction_deviation",
    }
    target = frames["long_cot_target"]["reasoning"]
    control = frames["long_cot_control"]["reasoning"]
    assert all(any(p in text for p in phrases) for text in target)
    assert not any(p in text for p in phrases for text in control)
    for pattern, group in mg.EFFORT_MINIMISING_PHRASES.items():
        assert any(p in text for p in group for text in target), pattern
    # The careful variant re-checks every step; the target variant never does.
    steps = frames["gsm8k_style"]["reasoning"].str.count("\n") + 1
    recheck_line = r"(?m)^(?:Let me double-check|To verify this|Checking this result)"
    assert (control.str.count(recheck_line) == steps).all()
    assert (control.str.count(r"(?m)^Step \d+: ") == steps).all()
    assert not target.str.contains(recheck_line).any()
    assert control.str.startswith("Let me restate the goal:").all()


def test_long_cot_lengths_are_similar(frames):
    control = frames["long_cot_control"]["reasoning"].str.split().str.len()
    target = frames["long_cot_target"]["reasoning"].str.split().str.len()
    ratio = target / control
    assert ratio.between(1 / 1.3, 1.3).all(), ratio.describe()


def test_long_cot_rejects_unknown_variant():
    with pytest.raises(ValueError, match="control.*target"):
        mg.long_cot(5, 0, "careful")


# --- literal counterfactual ----------------------------------------------------


def test_literal_counterfactual(frames):
    base, literal = frames["gsm8k_style"], frames["literal_counterfactual"]
    assert (literal["problem_id"] == base["problem_id"] + "-literal").all()
    for question, reasoning, answer, original in zip(
        literal["question"], literal["reasoning"], literal["answer"], base["question"]
    ):
        context, ask = question.split(" According to the text, ")
        assert original.startswith(context + " ")
        assert ask.endswith("?")
        assert re.search(rf"(?<![\d.]){re.escape(answer)}(?![\d])", context), question
        quoted = re.search(r'"(.*)"', reasoning).group(1)
        assert quoted in context and re.search(rf"(?<![\d.]){re.escape(answer)}(?![\d])", quoted)
        assert len(reasoning.splitlines()) == 1
    # The literal answer is usually not the GSM8k answer: no reasoning is needed.
    assert (literal["answer"] != base["answer"]).mean() > 0.8


# --- evaluation sets are disjoint from training --------------------------------


@pytest.mark.parametrize("name", ["multiarith_style", "multistep_hard"])
def test_evaluation_sets_do_not_share_training_questions(name):
    train = mg.gsm8k_style(500, 0)["question"]
    evaluation = mg.GENERATORS[name](500, 0)["question"]
    assert not set(train) & set(evaluation)
    train_openings, eval_openings = _first_words(train), _first_words(evaluation)
    shared = sum(count for opening, count in eval_openings.items() if opening in train_openings)
    assert shared / len(evaluation) < 0.01


def test_evaluation_step_counts():
    assert (mg.multiarith_style(300, 2)["reasoning"].str.count("\n") == 1).all()
    assert (mg.multistep_hard(300, 2)["reasoning"].str.count("\n") + 1).between(4, 7).all()


# --- normalisation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", "1234"),
        ("2.50", "2.5"),
        ("-0", "0"),
        ("+7", "7"),
        ("3.0", "3"),
        ("42", "42"),
        ("-3", "-3"),
        (" 12 ", "12"),
        ("1,234,567.800", "1234567.8"),
        ("007", "7"),
        (".5", "0.5"),
        ("5.", "5"),
        ("-0.00", "0"),
        ("\u22124", "-4"),
        ("0.05", "0.05"),
    ],
)
def test_normalize_number(text, expected):
    assert mg.normalize_number(text) == expected


@pytest.mark.parametrize("text", ["abc", "", "-", "1.2.3", "12,34", "1e5", "1/2", "$5", "5 pens", "--3"])
def test_normalize_number_rejects_non_numbers(text):
    with pytest.raises(ValueError, match="not a number"):
        mg.normalize_number(text)


def test_module_docstring_documents_columns_and_normalisation():
    doc = mg.__doc__
    for word in ["problem_id", "question", "reasoning", "final", "answer", "normalize_number", "1,234"]:
        assert word in doc
