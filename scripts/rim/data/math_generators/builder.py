"""The word-problem builder the templates use: named quantities, worked steps, exact results."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable

from rim.data.math_generators.numbers import (
    _format,
    _parse,
    _recheck,
    _value,
)


# ---------------------------------------------------------------------------
# Word-problem builder
# ---------------------------------------------------------------------------

# Name pools are disjoint per set, so evaluation questions cannot coincide with
# training questions even where scenarios look alike.
_NAMES = {
    "gsm8k_style": [
        ("Tom", "he"),
        ("Mia", "she"),
        ("Liam", "he"),
        ("Ava", "she"),
        ("Noah", "he"),
        ("Emma", "she"),
        ("Lucas", "he"),
        ("Sofia", "she"),
        ("Ethan", "he"),
        ("Chloe", "she"),
        ("Omar", "he"),
        ("Priya", "she"),
        ("Diego", "he"),
        ("Hana", "she"),
        ("Kofi", "he"),
        ("Lena", "she"),
        ("Mateo", "he"),
        ("Zara", "she"),
        ("Ben", "he"),
        ("Nina", "she"),
        ("Arjun", "he"),
        ("Grace", "she"),
        ("Leo", "he"),
        ("Maya", "she"),
        ("Samuel", "he"),
        ("Julia", "she"),
        ("Ivan", "he"),
        ("Aisha", "she"),
        ("Felix", "he"),
        ("Rosa", "she"),
    ],
    "multiarith_style": [
        ("Debby", "she"),
        ("Carlos", "he"),
        ("Wendy", "she"),
        ("Jerry", "he"),
        ("Paige", "she"),
        ("Adam", "he"),
        ("Megan", "she"),
        ("Victor", "he"),
        ("Tina", "she"),
        ("Oscar", "he"),
        ("Bella", "she"),
        ("Henry", "he"),
        ("Lucy", "she"),
        ("Frank", "he"),
        ("Irene", "she"),
        ("Paul", "he"),
        ("Nora", "she"),
        ("Kevin", "he"),
        ("Selma", "she"),
        ("Rick", "he"),
    ],
    "multistep_hard": [
        ("Marisol", "she"),
        ("Theo", "he"),
        ("Ingrid", "she"),
        ("Rafael", "he"),
        ("Yuki", "she"),
        ("Desmond", "he"),
        ("Beatrix", "she"),
        ("Anton", "he"),
        ("Farah", "she"),
        ("Gideon", "he"),
        ("Odette", "she"),
        ("Soren", "he"),
        ("Lucia", "she"),
        ("Malik", "he"),
        ("Petra", "she"),
        ("Hugo", "he"),
        ("Vera", "she"),
        ("Cyrus", "he"),
        ("Elif", "she"),
        ("Bruno", "he"),
    ],
}


_INTEGER_TOKEN = re.compile(r"-?\d+")


@dataclass(frozen=True)
class _Person:
    name: str
    he: str

    def __str__(self) -> str:
        return self.name

    @property
    def He(self) -> str:  # noqa: N802 - reads like the sentence it is used in
        return self.he.capitalize()

    @property
    def his(self) -> str:
        return "his" if self.he == "he" else "her"

    @property
    def His(self) -> str:  # noqa: N802
        return self.his.capitalize()

    @property
    def him(self) -> str:
        return "him" if self.he == "he" else "her"


@dataclass(frozen=True)
class _Fact:
    """A number stated verbatim in one context sentence (for the literal set)."""

    sentence: str
    ask: str  # "how many pens are in each pack", completes "According to the text, ...?"
    value: int


@dataclass(frozen=True)
class _Step:
    line: str  # "Tom buys 3 packs of 4 pens, so he has 3 * 4 = 12 pens."
    recheck: str  # "12 / 4 = 3", used by the careful long CoT
    value: int


@dataclass(frozen=True)
class _WordProblem:
    template: str
    context: str
    ask: str
    steps: tuple[_Step, ...]
    answer: int
    facts: tuple[_Fact, ...]

    @property
    def question(self) -> str:
        return f"{self.context} {self.ask}"


@dataclass
class _Builder:
    """Collects one word problem while a template writes it.

    ``step`` takes a sentence with ``@`` where the computation goes and the
    expression to compute; the value is computed here, never typed by hand.
    """

    rng: random.Random
    names: list[tuple[str, str]]
    sentences: list[str] = field(default_factory=list)
    facts: list[_Fact] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    question: str = ""
    _used_names: set[str] = field(default_factory=set)

    def person(self) -> _Person:
        while True:
            name, he = self.rng.choice(self.names)
            if name not in self._used_names:
                self._used_names.add(name)
                return _Person(name, he)

    def say(self, sentence: str, ask: str | None = None, value: int | None = None) -> None:
        self.sentences.append(sentence)
        if ask is not None:
            if str(value) not in _INTEGER_TOKEN.findall(sentence):
                raise AssertionError(f"fact {value} not stated in {sentence!r}")
            self.facts.append(_Fact(sentence, ask, value))

    def ask(self, question: str) -> None:
        self.question = question

    def step(self, line: str, expression: str) -> int:
        node = _parse(expression)
        result = _value(node, expression, integral=True)
        self.steps.append(
            _Step(
                line.replace("@", f"{expression} = {_format(result)}"), _recheck(node, expression, result), int(result)
            )
        )
        return int(result)

    def divide_with_remainder(self, line: str, total: int, size: int) -> tuple[int, int]:
        groups, left_over = divmod(total, size)
        self.steps.append(
            _Step(
                line.replace("@", f"{total} / {size} = {groups} with {left_over} left over"),
                f"{groups} * {size} + {left_over} = {total}",
                groups,
            )
        )
        return groups, left_over

    def build(self, template: str) -> _WordProblem:
        if not self.steps or not self.question:
            raise AssertionError(f"template {template} wrote no question or no steps")
        if self.steps[-1].line.endswith("left over."):
            raise AssertionError(f"template {template} must not end on a division with remainder")
        # The last computation is the answer, so the reasoning ends on it.
        return _WordProblem(
            template,
            " ".join(self.sentences),
            self.question,
            tuple(self.steps),
            self.steps[-1].value,
            tuple(self.facts),
        )


_Template = Callable[[_Builder], None]
_WORD_TEMPLATES: dict[str, list[_Template]] = {name: [] for name in _NAMES}


def _template(set_name: str) -> Callable[[_Template], _Template]:
    def register(function: _Template) -> _Template:
        _WORD_TEMPLATES[set_name].append(function)
        return function

    return register
