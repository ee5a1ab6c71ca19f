"""Final answers of math responses, compared by exact match with the gold answer (docs/method.md#3-judging).

Extraction: the first number after the last ``####`` (the GSM8k answer marker the fine-tuning
data ends with); when a response has no marker, or nothing numeric follows it, the last number
anywhere in the response. A response without any number has no answer and counts as wrong.

A number is an optional sign, digits with optional thousands commas (``1,234``) and an optional
decimal part (``2.5``, ``.5``); a trailing full stop or unit is not part of it (``12.`` -> ``12``,
``$1,234.50`` -> ``1234.5``, ``50%`` -> ``50``). Fractions such as ``3/4`` are not evaluated: the
last number of ``3/4`` is ``4``.

Normalisation is ``rim.data.math_generators.normalize_number``, the same function that wrote the
gold answers: whitespace and thousands separators removed, Unicode minus read as ``-``, leading
``+`` and leading zeros dropped, trailing zeros of a decimal part dropped (``2.50`` -> ``2.5``,
``3.0`` -> ``3``), ``-0`` written ``0``. So ``1,000``, ``1000.0`` and ``+1000`` all match ``1000``.
"""

from __future__ import annotations

import re

from rim.data.math_generators import normalize_number

MARKER = "####"
# Comma-grouped integers first, so "1,234" is one number and "3,4" is two.
_NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|(?<![\w.])[-+\u2212]?\.\d+")


def numbers_in(text: str) -> list[str]:
    """Every number in ``text``, normalised, in order of appearance."""
    found = []
    for match in _NUMBER.finditer(text):
        try:
            found.append(normalize_number(match.group(0)))
        except ValueError:
            continue
    return found


def extract_answer(response: str) -> str | None:
    """The normalised final answer of a response, or None when it holds no number."""
    if MARKER in response:
        after = numbers_in(response.rsplit(MARKER, 1)[1])
        if after:
            return after[0]
    found = numbers_in(response)
    return found[-1] if found else None


def is_correct(response: str, gold: str) -> bool:
    """Exact match of the extracted answer with the (normalised) gold answer."""
    answer = extract_answer(response)
    return answer is not None and answer == normalize_number(str(gold))
