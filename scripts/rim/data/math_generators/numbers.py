"""Answer normalisation and exact arithmetic of the math generators."""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction
from typing import Callable


COLUMNS = ("problem_id", "question", "reasoning", "final", "answer")

# A template that keeps producing questions already in the set has run out of
# variety; failing loudly beats looping forever.
_MAX_CONSECUTIVE_COLLISIONS = 10_000


# ---------------------------------------------------------------------------
# Answer normalisation and exact arithmetic
# ---------------------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_GROUPED_INTEGER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")


def normalize_number(text: str) -> str:
    """Return the canonical string form of a number (rules in the module docstring)."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"not a number: {text!r}")
    cleaned = re.sub(r"\s+", "", str(text)).replace("\u2212", "-")
    if "," in cleaned:
        whole, dot, fraction = cleaned.partition(".")
        if not _GROUPED_INTEGER.fullmatch(whole):
            raise ValueError(f"not a number: {text!r}")
        cleaned = whole.replace(",", "") + dot + fraction
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        raise ValueError(f"not a number: {text!r}")
    sign = "-" if cleaned.startswith("-") else ""
    whole, _, fraction = cleaned.lstrip("+-").partition(".")
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    body = f"{whole}.{fraction}" if fraction else whole
    return "0" if body == "0" else sign + body


_BINARY_OPS: dict[type, Callable[[Fraction | int, Fraction | int], Fraction | int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda left, right: Fraction(left) / right,  # exact, never a float
}


def _parse(expression: str) -> ast.expr:
    return ast.parse(expression.replace("^", "**"), mode="eval").body


def _value(node: ast.expr, expression: str, integral: bool = False) -> Fraction | int:
    """Evaluate a parsed ``+ - * / ^`` expression exactly.

    With ``integral=True`` every intermediate result must be a whole number:
    word problems must never make a grade-schooler divide unevenly.
    """
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value  # plain ints are exact and much faster than Fractions
    if isinstance(node, ast.Constant) and type(node.value) is float:
        # repr() gives back the literal as written, so 1.2 becomes exactly 6/5.
        return Fraction(repr(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand, expression, integral)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _value(node.left, expression, integral), _value(node.right, expression, integral)
        if exponent.denominator != 1:
            raise ValueError(f"non-integer exponent in {expression!r}")
        result = Fraction(base) ** int(exponent)  # a negative exponent must stay exact
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        result = _BINARY_OPS[type(node.op)](
            _value(node.left, expression, integral), _value(node.right, expression, integral)
        )
    else:
        raise ValueError(f"unsupported arithmetic in {expression!r}")
    if result.denominator == 1:
        return int(result)
    if integral:
        raise ValueError(f"non-integer intermediate result in {expression!r}")
    return result


def _evaluate(expression: str, integral: bool = False) -> Fraction | int:
    return _value(_parse(expression), expression, integral)


def _format(number: Fraction | int) -> str:
    """Write an exact number as a normalised decimal; it must terminate."""
    if isinstance(number, int):
        return str(number)
    if number.denominator == 1:
        return str(number.numerator)
    denominator, places = number.denominator, 0
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        raise ValueError(f"{number} has no finite decimal form")
    while (number * 10**places).denominator != 1:
        places += 1
    digits = str(abs(number.numerator * 10**places // number.denominator)).rjust(places + 1, "0")
    sign = "-" if number < 0 else ""
    return normalize_number(f"{sign}{digits[:-places]}.{digits[-places:]}")


def _operand(number: Fraction | int) -> str:
    """A number as it appears inside an expression: negatives in parentheses."""
    text = _format(number)
    return f"({text})" if text.startswith("-") else text


_INVERSE = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*"}


def _recheck(node: ast.expr, expression: str, result: Fraction | int) -> str:
    """An explicit re-check of ``expression = result`` for the careful long CoT.

    The last operation is checked by undoing it (12 - 5 = 7 is checked as
    7 + 5 = 12); anything else is recomputed.
    """
    if isinstance(node, ast.BinOp) and type(node.op) in _INVERSE:
        left, right = _value(node.left, expression), _value(node.right, expression)
        if not (isinstance(node.op, ast.Mult) and right == 0):
            return f"{_operand(result)} {_INVERSE[type(node.op)]} {_operand(right)} = {_format(left)}"
    return f"{expression} = {_format(result)}"
