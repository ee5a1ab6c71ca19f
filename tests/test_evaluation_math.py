"""Final-answer extraction and exact match (rim.evaluation.math_answers)."""

from __future__ import annotations

import pytest

from rim.evaluation.math_answers import extract_answer, is_correct, numbers_in


@pytest.mark.parametrize(
    "response, expected",
    [
        ("3 * 4 = 12\n#### 12", "12"),
        ("so the total is 1,234 dollars", "1234"),  # thousands separators
        ("#### 1,234,567", "1234567"),
        ("The temperature fell to -5.", "-5"),  # a negative, and a full stop that is not a decimal
        ("#### \u22127", "-7"),  # Unicode minus
        ("She pays $12.50 per hour", "12.5"),  # decimals lose trailing zeros
        ("x = 3.0", "3"),
        ("It is .5 of the cake", "0.5"),
        ("#### +8", "8"),
        ("#### 007", "7"),
        ("50% of them", "50"),
        ("I cannot solve this problem.", None),  # no number at all
        ("", None),
        ("####", None),
        ("#### none", None),
    ],
)
def test_extract_answer_edge_cases(response, expected):
    assert extract_answer(response) == expected


def test_marker_wins_over_later_numbers_and_last_marker_counts():
    assert extract_answer("1 + 2 = 3\n#### 3\nThat took me 10 seconds") == "3"
    assert extract_answer("#### 4 wait, no\n#### 5") == "5"
    # Nothing numeric after the marker: fall back to the last number of the response.
    assert extract_answer("2 + 2 = 4 #### four") == "4"


def test_without_marker_the_last_number_counts():
    assert extract_answer("First 3 + 4 = 7, then 7 * 2 = 14") == "14"


def test_subtraction_is_not_a_negative_number_and_commas_must_group_by_three():
    assert numbers_in("10-3=7") == ["10", "3", "7"]
    assert numbers_in("values 3,4 and 1,000") == ["3", "4", "1000"]


def test_exact_match_normalises_both_sides():
    assert is_correct("#### 1,000", "1000")
    assert is_correct("the answer is 2.50", "2.5")
    assert is_correct("#### -0", "0")
    assert not is_correct("#### 12", "13")
    assert not is_correct("no idea", "13")
