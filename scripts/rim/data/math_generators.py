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

from __future__ import annotations

import ast
import functools
import operator
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import pandas as pd

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


# ---------------------------------------------------------------------------
# GSM8k-style templates (training set; also the contexts of the derived sets)
# ---------------------------------------------------------------------------


@_template("gsm8k_style")
def _packs_given_away(b: _Builder) -> None:
    p, r = b.person(), b.rng
    item = r.choice(["pens", "pencils", "markers", "stickers", "crayons", "erasers"])
    packs, per_pack = r.randint(3, 9), r.randint(4, 12)
    given = r.randint(2, packs * per_pack // 2)
    b.say(f"{p} buys {packs} packs of {item}.", f"how many packs of {item} does {p} buy", packs)
    b.say(f"Each pack has {per_pack} {item}.", f"how many {item} are in each pack", per_pack)
    b.say(
        f"{p.He} gives {given} {item} to {p.his} friends.", f"how many {item} does {p} give to {p.his} friends", given
    )
    b.ask(f"How many {item} does {p} have left?")
    total = b.step(f"{p} buys {packs} packs of {per_pack} {item}, so {p.he} has @ {item}.", f"{packs} * {per_pack}")
    b.step(f"After giving away {given}, {p.he} has @ {item} left.", f"{total} - {given}")


@_template("gsm8k_style")
def _shopping_change(b: _Builder) -> None:
    p, r = b.person(), b.rng
    first, second = r.sample(["notebooks", "folders", "rulers", "glue sticks", "calculators", "binders"], 2)
    n1, price1, n2, price2 = r.randint(2, 6), r.randint(2, 9), r.randint(2, 5), r.randint(3, 12)
    bill = next(note for note in (20, 50, 100, 200) if note > n1 * price1 + n2 * price2)
    b.say(f"{p} buys {n1} {first} that cost ${price1} each.", f"how many {first} does {p} buy", n1)
    b.say(
        f"{p.He} also buys {n2} {second} that cost ${price2} each.",
        f"how much does each of the {second} cost, in dollars",
        price2,
    )
    b.say(f"{p.He} pays with a ${bill} bill.", f"how many dollars is the bill {p} pays with", bill)
    b.ask(f"How much change does {p} get, in dollars?")
    cost1 = b.step(f"The {first} cost @ dollars.", f"{n1} * {price1}")
    cost2 = b.step(f"The {second} cost @ dollars.", f"{n2} * {price2}")
    total = b.step("Together they cost @ dollars.", f"{cost1} + {cost2}")
    b.step(f"{p} gets @ dollars in change.", f"{bill} - {total}")


@_template("gsm8k_style")
def _road_trip(b: _Builder) -> None:
    p, r = b.person(), b.rng
    s1, h1 = r.randrange(40, 75, 5), r.randint(2, 5)
    s2, h2 = r.randrange(30, 65, 5), r.randint(1, 3)
    b.say(
        f"{p} drives at {s1} miles per hour for {h1} hours.", f"how fast does {p} drive at first, in miles per hour", s1
    )
    b.say(
        f"Then {p.he} drives at {s2} miles per hour for {h2} more hours.",
        f"for how many more hours does {p} drive at the second speed",
        h2,
    )
    b.ask(f"How many miles does {p} drive in total?")
    d1 = b.step(f"First {p.he} covers @ miles.", f"{s1} * {h1}")
    d2 = b.step(f"Then {p.he} covers @ miles.", f"{s2} * {h2}")
    b.step(f"In total {p.he} drives @ miles.", f"{d1} + {d2}")


@_template("gsm8k_style")
def _family_ages(b: _Builder) -> None:
    p, r = b.person(), b.rng
    age, times, older = r.randint(5, 14), r.randint(3, 4), r.randint(20, 30)
    b.say(f"{p} is {age} years old.", f"how old is {p}", age)
    b.say(f"{p.His} mother is {times} times as old as {p.him}.")
    b.say(
        f"{p.His} grandfather is {older} years older than {p.his} mother.",
        f"how many years older than {p}'s mother is {p.his} grandfather",
        older,
    )
    b.ask(f"What is the sum of the ages of {p}, {p.his} mother and {p.his} grandfather?")
    mother = b.step("The mother is @ years old.", f"{age} * {times}")
    grandfather = b.step("The grandfather is @ years old.", f"{mother} + {older}")
    b.step("Their ages add up to @ years.", f"{age} + {mother} + {grandfather}")


@_template("gsm8k_style")
def _workshop_output(b: _Builder) -> None:
    p, r = b.person(), b.rng
    item = r.choice(["toy cars", "bracelets", "candles", "mugs", "birdhouses", "scarves"])
    per_hour, hours, days = r.randint(3, 15), r.randint(4, 9), r.randint(3, 6)
    b.say(f"{p} makes {per_hour} {item} every hour.", f"how many {item} does {p} make every hour", per_hour)
    b.say(f"{p.He} works {hours} hours a day for {days} days.", f"for how many days does {p} work", days)
    b.ask(f"How many {item} does {p} make?")
    daily = b.step(f"Each day {p.he} makes @ {item}.", f"{per_hour} * {hours}")
    b.step(f"Over {days} days {p.he} makes @ {item}.", f"{daily} * {days}")


@_template("gsm8k_style")
def _sharing_cookies(b: _Builder) -> None:
    p, r = b.person(), b.rng
    treat = r.choice(["cookies", "cupcakes", "brownies", "muffins"])
    friends, each, eaten = r.randint(2, 6), r.randint(3, 12), r.randint(1, 6)
    baked = friends * each + eaten
    b.say(f"{p} bakes {baked} {treat}.", f"how many {treat} does {p} bake", baked)
    b.say(
        f"{p.He} eats {eaten} of them and shares the rest equally among {friends} friends.",
        f"how many of the {treat} does {p} eat",
        eaten,
    )
    b.ask(f"How many {treat} does each friend get?")
    rest = b.step(f"After eating some, {p.he} has @ {treat} to share.", f"{baked} - {eaten}")
    b.step(f"Each friend gets @ {treat}.", f"{rest} / {friends}")


@_template("gsm8k_style")
def _savings_weeks(b: _Builder) -> None:
    p, r = b.person(), b.rng
    thing = r.choice(["bike", "guitar", "skateboard", "tablet", "telescope", "camera"])
    weekly, weeks, saved = r.randint(5, 25), r.randint(3, 12), r.randint(10, 60)
    price = saved + weekly * weeks
    b.say(f"A {thing} costs ${price}.", f"how much does the {thing} cost, in dollars", price)
    b.say(f"{p} has already saved ${saved}.", f"how many dollars has {p} already saved", saved)
    b.say(f"{p.He} saves ${weekly} every week.", f"how many dollars does {p} save every week", weekly)
    b.ask(f"How many weeks does {p} need to save before {p.he} can buy the {thing}?")
    missing = b.step(f"{p.He} still needs @ dollars.", f"{price} - {saved}")
    b.step(f"At {weekly} dollars a week that takes @ weeks.", f"{missing} / {weekly}")


@_template("gsm8k_style")
def _recipe_flour(b: _Builder) -> None:
    p, r = b.person(), b.rng
    baked = r.choice(["bread", "pancakes", "pizza dough", "biscuits"])
    cups, batches = r.randint(2, 5), r.randint(3, 8)
    has = r.randint(1, cups * batches - 1)
    b.say(
        f"One batch of {baked} needs {cups} cups of flour.",
        f"how many cups of flour does one batch of {baked} need",
        cups,
    )
    b.say(f"{p} wants to make {batches} batches.", f"how many batches does {p} want to make", batches)
    b.say(f"{p.He} has {has} cups of flour at home.", f"how many cups of flour does {p} have at home", has)
    b.ask(f"How many more cups of flour does {p} need?")
    needed = b.step(f"{batches} batches need @ cups of flour.", f"{cups} * {batches}")
    b.step(f"{p.He} needs @ more cups.", f"{needed} - {has}")


@_template("gsm8k_style")
def _garden_rows(b: _Builder) -> None:
    p, r = b.person(), b.rng
    plant, crop = r.choice(
        [
            ("tomato plants", "tomatoes"),
            ("pepper plants", "peppers"),
            ("strawberry plants", "strawberries"),
            ("bean plants", "bean pods"),
        ]
    )
    rows, per_row, yield_ = r.randint(3, 9), r.randint(4, 12), r.randint(3, 8)
    b.say(f"{p} plants {rows} rows of {plant}.", f"how many rows of {plant} does {p} plant", rows)
    b.say(f"Each row has {per_row} plants.", "how many plants does each row have", per_row)
    b.say(f"Each plant gives {yield_} {crop}.", f"how many {crop} does each plant give", yield_)
    b.ask(f"How many {crop} does {p} harvest?")
    plants = b.step("There are @ plants.", f"{rows} * {per_row}")
    b.step(f"They give @ {crop}.", f"{plants} * {yield_}")


@_template("gsm8k_style")
def _book_pages_left(b: _Builder) -> None:
    p, r = b.person(), b.rng
    per_day, days = r.randint(8, 30), r.randint(3, 9)
    pages = per_day * days + r.randint(10, 120)
    b.say(f"{p}'s book has {pages} pages.", f"how many pages does {p}'s book have", pages)
    b.say(
        f"{p.He} reads {per_day} pages every day for {days} days.", f"how many pages does {p} read every day", per_day
    )
    b.ask("How many pages are left to read?")
    read = b.step(f"{p.He} reads @ pages.", f"{per_day} * {days}")
    b.step("There are @ pages left.", f"{pages} - {read}")


@_template("gsm8k_style")
def _bake_sale_revenue(b: _Builder) -> None:
    p, r = b.person(), b.rng
    trays, per_tray, price = r.randint(2, 6), r.randint(6, 12), r.randint(2, 5)
    unsold = r.randint(1, per_tray)
    b.say(
        f"{p} bakes {trays} trays of muffins with {per_tray} muffins on each tray.",
        "how many muffins are on each tray",
        per_tray,
    )
    b.say(f"{p.He} sells all but {unsold} muffins for ${price} each.", f"how many muffins does {p} not sell", unsold)
    b.ask(f"How much money does {p} make, in dollars?")
    baked = b.step(f"{p.He} bakes @ muffins.", f"{trays} * {per_tray}")
    sold = b.step(f"{p.He} sells @ muffins.", f"{baked} - {unsold}")
    b.step(f"{p.He} makes @ dollars.", f"{sold} * {price}")


@_template("gsm8k_style")
def _notebook_packs(b: _Builder) -> None:
    p, r = b.person(), b.rng
    while True:
        classes, students, each, pack = r.randint(2, 5), r.randint(18, 30), r.randint(2, 4), r.choice([4, 5, 6, 10])
        if classes * students * each % pack == 0:
            break
    b.say(
        f"{p} teaches {classes} classes with {students} students in each class.",
        f"how many students are in each of {p}'s classes",
        students,
    )
    b.say(f"Every student needs {each} notebooks.", "how many notebooks does every student need", each)
    b.say(f"Notebooks come in packs of {pack}.", "how many notebooks come in a pack", pack)
    b.ask(f"How many packs of notebooks does {p} need to buy?")
    total_students = b.step("There are @ students.", f"{classes} * {students}")
    notebooks = b.step("They need @ notebooks.", f"{total_students} * {each}")
    b.step("That is @ packs.", f"{notebooks} / {pack}")


@_template("gsm8k_style")
def _fruit_stand(b: _Builder) -> None:
    p, r = b.person(), b.rng
    apples, times = 2 * r.randint(5, 30), r.randint(2, 4)
    b.say(f"{p}'s fruit stand has {apples} apples.", f"how many apples does {p}'s fruit stand have", apples)
    b.say(f"It has {times} times as many oranges as apples, and half as many pears as apples.")
    b.ask("How many pieces of fruit are at the stand?")
    oranges = b.step("There are @ oranges.", f"{apples} * {times}")
    pears = b.step("There are @ pears.", f"{apples} / 2")
    b.step("Altogether there are @ pieces of fruit.", f"{apples} + {oranges} + {pears}")


@_template("gsm8k_style")
def _temperature_drop(b: _Builder) -> None:
    r = b.rng
    place = r.choice(["In the mountains", "At the ski resort", "In the desert at night", "On the lake"])
    start, drop, hours = r.randint(-10, 20), r.randint(1, 6), r.randint(2, 10)
    b.say(
        f"{place}, the temperature is {start} degrees at sunset.",
        "what is the temperature at sunset, in degrees",
        start,
    )
    b.say(
        f"It drops by {drop} degrees every hour for {hours} hours.",
        "by how many degrees does the temperature drop every hour",
        drop,
    )
    b.ask(f"What is the temperature after those {hours} hours, in degrees?")
    fall = b.step("The temperature falls by @ degrees.", f"{drop} * {hours}")
    b.step("It ends at @ degrees.", f"{start} - {fall}")


@_template("gsm8k_style")
def _weekly_wage(b: _Builder) -> None:
    p, r = b.person(), b.rng
    rate, weekday_hours, saturday_hours = r.randint(10, 25), r.randint(4, 8), r.randint(2, 6)
    b.say(f"{p} earns ${rate} an hour at the cafe.", f"how many dollars an hour does {p} earn", rate)
    b.say(
        f"{p.He} works {weekday_hours} hours on each weekday and {saturday_hours} hours on Saturday.",
        f"how many hours does {p} work on Saturday",
        saturday_hours,
    )
    b.ask(f"How much does {p} earn in a week, in dollars?")
    weekdays = b.step(f"On the 5 weekdays {p.he} works @ hours.", f"5 * {weekday_hours}")
    hours = b.step("With Saturday that is @ hours.", f"{weekdays} + {saturday_hours}")
    b.step(f"{p.He} earns @ dollars.", f"{hours} * {rate}")


@_template("gsm8k_style")
def _pizza_party(b: _Builder) -> None:
    p, r = b.person(), b.rng
    while True:
        pizzas, slices, guests, eats = r.randint(3, 8), r.choice([6, 8, 10, 12]), r.randint(4, 12), r.randint(2, 3)
        if pizzas * slices > guests * eats:
            break
    b.say(
        f"{p} orders {pizzas} pizzas for a party, and each pizza is cut into {slices} slices.",
        f"how many pizzas does {p} order",
        pizzas,
    )
    b.say(f"{guests} guests each eat {eats} slices.", "how many guests eat pizza", guests)
    b.ask("How many slices are left over?")
    total = b.step("There are @ slices.", f"{pizzas} * {slices}")
    eaten = b.step("The guests eat @ slices.", f"{guests} * {eats}")
    b.step("That leaves @ slices.", f"{total} - {eaten}")


@_template("gsm8k_style")
def _bus_stops(b: _Builder) -> None:
    r = b.rng
    start = r.randint(20, 45)
    off1 = r.randint(3, start - 5)
    on1 = r.randint(2, 15)
    off2 = r.randint(1, start - off1 + on1)
    b.say(
        f"A bus leaves the station with {start} passengers.",
        "how many passengers are on the bus when it leaves the station",
        start,
    )
    b.say(
        f"At the first stop {off1} passengers get off and {on1} get on.",
        "how many passengers get on at the first stop",
        on1,
    )
    b.say(f"At the second stop {off2} passengers get off.", "how many passengers get off at the second stop", off2)
    b.ask("How many passengers are on the bus now?")
    after_off = b.step("After people leave at the first stop there are @ passengers.", f"{start} - {off1}")
    after_on = b.step("With the new riders there are @ passengers.", f"{after_off} + {on1}")
    b.step("After the second stop there are @ passengers.", f"{after_on} - {off2}")


@_template("gsm8k_style")
def _aquarium_fish(b: _Builder) -> None:
    p, r = b.person(), b.rng
    fish, weekly, weeks, given = r.randint(5, 20), r.randint(2, 6), r.randint(2, 6), r.randint(1, 5)
    b.say(f"{p}'s aquarium has {fish} fish.", f"how many fish does {p}'s aquarium have", fish)
    b.say(
        f"{p.He} buys {weekly} more fish every week for {weeks} weeks.",
        f"how many fish does {p} buy every week",
        weekly,
    )
    b.say(f"Then {p.he} gives {given} fish to a neighbour.", f"how many fish does {p} give to a neighbour", given)
    b.ask(f"How many fish does {p} have now?")
    bought = b.step(f"{p.He} buys @ fish.", f"{weekly} * {weeks}")
    total = b.step("That makes @ fish.", f"{fish} + {bought}")
    b.step(f"After the gift {p.he} has @ fish.", f"{total} - {given}")


@_template("gsm8k_style")
def _stickers_third(b: _Builder) -> None:
    p, q, r = b.person(), b.person(), b.rng
    stickers, bought = 3 * r.randint(5, 20), r.randint(4, 25)
    b.say(f"{p} has {stickers} stickers.", f"how many stickers does {p} have at first", stickers)
    b.say(f"{p.He} gives a third of them to {q}.")
    b.say(f"Later {p.he} buys {bought} more stickers.", f"how many stickers does {p} buy later", bought)
    b.ask(f"How many stickers does {p} have now?")
    given = b.step(f"{p.He} gives away @ stickers.", f"{stickers} / 3")
    kept = b.step(f"{p.He} keeps @ stickers.", f"{stickers} - {given}")
    b.step(f"After buying more {p.he} has @ stickers.", f"{kept} + {bought}")


@_template("gsm8k_style")
def _streaming_subscription(b: _Builder) -> None:
    p, r = b.person(), b.rng
    service = r.choice(["music", "video", "gym", "cloud storage", "language app"])
    fee, months, signup = r.randint(8, 30), r.randint(3, 12), r.randint(10, 50)
    b.say(
        f"A {service} subscription costs ${fee} a month.",
        f"how much does the {service} subscription cost a month, in dollars",
        fee,
    )
    b.say(f"There is also a one-time sign-up fee of ${signup}.", "how many dollars is the one-time sign-up fee", signup)
    b.say(
        f"{p} keeps the subscription for {months} months.",
        f"for how many months does {p} keep the subscription",
        months,
    )
    b.ask(f"How much does {p} pay in total, in dollars?")
    monthly = b.step("The monthly fees add up to @ dollars.", f"{fee} * {months}")
    b.step(f"With the sign-up fee {p.he} pays @ dollars.", f"{monthly} + {signup}")


@_template("gsm8k_style")
def _garden_fence(b: _Builder) -> None:
    p, r = b.person(), b.rng
    length, width, price = r.randint(5, 30), r.randint(4, 20), r.randint(3, 12)
    b.say(
        f"{p}'s rectangular garden is {length} meters long and {width} meters wide.",
        f"how many meters long is {p}'s garden",
        length,
    )
    b.say(f"Fencing costs ${price} per meter.", "how many dollars does fencing cost per meter", price)
    b.ask("How much does it cost to fence the whole garden, in dollars?")
    half = b.step("One length and one width make @ meters.", f"{length} + {width}")
    perimeter = b.step("The perimeter is @ meters.", f"2 * {half}")
    b.step("The fence costs @ dollars.", f"{perimeter} * {price}")


@_template("gsm8k_style")
def _museum_tickets(b: _Builder) -> None:
    p, r = b.person(), b.rng
    venue = r.choice(["museum", "zoo", "aquarium", "science centre", "theme park"])
    adult = r.randint(9, 24)
    child, adults, children = r.randint(4, adult - 3), r.randint(1, 3), r.randint(2, 5)
    b.say(
        f"Tickets to the {venue} cost ${adult} for adults and ${child} for children.",
        f"how much does a child ticket to the {venue} cost, in dollars",
        child,
    )
    b.say(
        f"{p} buys tickets for {adults} adults and {children} children.",
        f"how many children's tickets does {p} buy",
        children,
    )
    b.ask(f"How much does {p} spend on tickets, in dollars?")
    adult_cost = b.step("Adult tickets cost @ dollars.", f"{adults} * {adult}")
    child_cost = b.step("Children's tickets cost @ dollars.", f"{children} * {child}")
    b.step(f"Altogether {p.he} spends @ dollars.", f"{adult_cost} + {child_cost}")


@_template("gsm8k_style")
def _running_laps(b: _Builder) -> None:
    p, r = b.person(), b.rng
    laps, track, days = r.randint(4, 12), r.choice([200, 250, 300, 400]), r.randint(3, 7)
    b.say(f"{p} runs {laps} laps around a {track}-meter track.", f"how many laps does {p} run each day", laps)
    b.say(f"{p.He} does this every day for {days} days.", f"for how many days does {p} run", days)
    b.ask(f"How many meters does {p} run in total?")
    daily = b.step(f"Each day {p.he} runs @ meters.", f"{laps} * {track}")
    b.step(f"In {days} days {p.he} runs @ meters.", f"{daily} * {days}")


@_template("gsm8k_style")
def _water_tank(b: _Builder) -> None:
    r = b.rng
    rate, minutes, already = r.randint(3, 20), r.randint(5, 30), r.randint(10, 200)
    capacity = already + rate * minutes
    b.say(f"A water tank holds {capacity} liters.", "how many liters does the water tank hold", capacity)
    b.say(f"It already contains {already} liters.", "how many liters does the tank already contain", already)
    b.say(f"A hose adds {rate} liters every minute.", "how many liters does the hose add every minute", rate)
    b.ask("How many minutes will it take to fill the tank?")
    missing = b.step("The tank needs @ more liters.", f"{capacity} - {already}")
    b.step("That takes @ minutes.", f"{missing} / {rate}")


@_template("gsm8k_style")
def _parking_garage(b: _Builder) -> None:
    r = b.rng
    levels, spots = r.randint(2, 6), r.randint(20, 60)
    cars = r.randint(10, levels * spots - 1)
    b.say(
        f"A parking garage has {levels} levels with {spots} spaces on each level.",
        "how many spaces are on each level of the garage",
        spots,
    )
    b.say(f"{cars} cars are parked there.", "how many cars are parked in the garage", cars)
    b.ask("How many spaces are still free?")
    total = b.step("The garage has @ spaces.", f"{levels} * {spots}")
    b.step("There are @ free spaces.", f"{total} - {cars}")


@_template("gsm8k_style")
def _candy_jars(b: _Builder) -> None:
    p, r = b.person(), b.rng
    while True:
        jars, per_jar, daily, days = r.randint(2, 6), r.randint(20, 60), r.randint(2, 6), r.randint(3, 10)
        if daily * days < jars * per_jar:
            break
    b.say(f"{p} has {jars} jars with {per_jar} candies in each jar.", "how many candies are in each jar", per_jar)
    b.say(f"{p.He} eats {daily} candies a day for {days} days.", f"how many candies does {p} eat a day", daily)
    b.ask("How many candies are left?")
    total = b.step(f"{p.He} starts with @ candies.", f"{jars} * {per_jar}")
    eaten = b.step(f"{p.He} eats @ candies.", f"{daily} * {days}")
    b.step("There are @ candies left.", f"{total} - {eaten}")


@_template("gsm8k_style")
def _coin_jar(b: _Builder) -> None:
    p, r = b.person(), b.rng
    quarters, dimes = r.randint(3, 20), r.randint(3, 20)
    b.say(f"{p} has {quarters} quarters and {dimes} dimes in a jar.", f"how many quarters does {p} have", quarters)
    b.say("A quarter is worth 25 cents and a dime is worth 10 cents.")
    b.ask(f"How many cents does {p} have?")
    q_value = b.step("The quarters are worth @ cents.", f"{quarters} * 25")
    d_value = b.step("The dimes are worth @ cents.", f"{dimes} * 10")
    b.step("Together that is @ cents.", f"{q_value} + {d_value}")


@_template("gsm8k_style")
def _painting_rooms(b: _Builder) -> None:
    p, r = b.person(), b.rng
    rooms, gallons, price, brushes = r.randint(2, 6), r.randint(2, 4), r.randint(15, 40), r.randint(8, 30)
    b.say(
        f"{p} paints {rooms} rooms, and each room needs {gallons} gallons of paint.",
        f"how many rooms does {p} paint",
        rooms,
    )
    b.say(f"A gallon of paint costs ${price}.", "how many dollars does a gallon of paint cost", price)
    b.say(f"{p.He} also buys brushes for ${brushes}.", f"how many dollars does {p} spend on brushes", brushes)
    b.ask(f"How much does {p} spend in total, in dollars?")
    paint = b.step(f"{p.He} needs @ gallons.", f"{rooms} * {gallons}")
    paint_cost = b.step("The paint costs @ dollars.", f"{paint} * {price}")
    b.step(f"With the brushes {p.he} spends @ dollars.", f"{paint_cost} + {brushes}")


@_template("gsm8k_style")
def _field_trip_buses(b: _Builder) -> None:
    r = b.rng
    seats, buses, teachers = r.choice([24, 30, 32, 36, 40, 44, 45, 48, 50, 52]), r.randint(2, 9), r.randint(2, 12)
    place = r.choice(["the museum", "the zoo", "the aquarium", "a farm", "the planetarium"])
    students = seats * buses - teachers
    b.say(
        f"{students} students and {teachers} teachers go on a field trip to {place}.",
        "how many teachers go on the field trip",
        teachers,
    )
    b.say(f"Each bus holds {seats} people, and every bus is full.", "how many people does each bus hold", seats)
    b.ask("How many buses do they use?")
    people = b.step("There are @ people.", f"{students} + {teachers}")
    b.step("They need @ buses.", f"{people} / {seats}")


@_template("gsm8k_style")
def _shared_gift(b: _Builder) -> None:
    p, r = b.person(), b.rng
    friends, share, card = r.randint(3, 6), r.randint(6, 20), r.randint(2, 8)
    gift = friends * share - card
    b.say(
        f"{p} and {p.his} friends buy a gift for ${gift} and a card for ${card}.",
        "how many dollars does the card cost",
        card,
    )
    b.say(f"The {friends} of them split the cost equally.", "how many people split the cost", friends)
    b.ask("How much does each person pay, in dollars?")
    total = b.step("The gift and card cost @ dollars.", f"{gift} + {card}")
    b.step("Each person pays @ dollars.", f"{total} / {friends}")


@_template("gsm8k_style")
def _orchard_baskets(b: _Builder) -> None:
    p, r = b.person(), b.rng
    per_hour, hours, kept, price = r.randint(3, 8), r.randint(2, 6), r.randint(2, 5), r.randint(5, 15)
    b.say(
        f"{p} picks {per_hour} baskets of apples every hour for {hours} hours.",
        f"how many baskets of apples does {p} pick every hour",
        per_hour,
    )
    b.say(f"{p.He} keeps {kept} baskets and sells the rest for ${price} each.", f"how many baskets does {p} keep", kept)
    b.ask(f"How much money does {p} get, in dollars?")
    picked = b.step(f"{p.He} picks @ baskets.", f"{per_hour} * {hours}")
    sold = b.step(f"{p.He} sells @ baskets.", f"{picked} - {kept}")
    b.step(f"{p.He} gets @ dollars.", f"{sold} * {price}")


@_template("gsm8k_style")
def _allowance_spending(b: _Builder) -> None:
    p, r = b.person(), b.rng
    allowance, weeks = 2 * r.randint(3, 10), r.randint(4, 10)
    snacks = r.randint(1, allowance * weeks // 2 - 1)
    b.say(
        f"{p} gets ${allowance} of allowance every week and saves it for {weeks} weeks.",
        f"how many dollars of allowance does {p} get every week",
        allowance,
    )
    b.say(
        f"{p.He} spends half of the money on a game and ${snacks} on snacks.",
        f"how many dollars does {p} spend on snacks",
        snacks,
    )
    b.ask(f"How much money does {p} have left, in dollars?")
    saved = b.step(f"{p.He} saves @ dollars.", f"{allowance} * {weeks}")
    half = b.step(f"After the game {p.he} has @ dollars.", f"{saved} / 2")
    b.step(f"After snacks {p.he} has @ dollars left.", f"{half} - {snacks}")


@_template("gsm8k_style")
def _library_loans(b: _Builder) -> None:
    r = b.rng
    books = r.randint(200, 900)
    monday, tuesday, returned = r.randint(10, 60), r.randint(10, 60), r.randint(5, 40)
    b.say(
        f"A school library has {books} books on its shelves.",
        "how many books are on the library's shelves at first",
        books,
    )
    b.say(
        f"Students borrow {monday} books on Monday and {tuesday} books on Tuesday.",
        "how many books do students borrow on Tuesday",
        tuesday,
    )
    b.say(f"On Wednesday {returned} books are returned.", "how many books are returned on Wednesday", returned)
    b.ask("How many books are on the shelves after Wednesday?")
    borrowed = b.step("Students borrow @ books.", f"{monday} + {tuesday}")
    left = b.step("After borrowing, @ books remain.", f"{books} - {borrowed}")
    b.step("After the returns there are @ books.", f"{left} + {returned}")


@_template("gsm8k_style")
def _cycling_speed(b: _Builder) -> None:
    p, r = b.person(), b.rng
    speed, hours, later = r.randint(8, 25), r.randint(2, 5), r.randint(3, 8)
    distance = speed * hours
    b.say(f"{p} cycles {distance} kilometers in {hours} hours.", f"how many kilometers does {p} cycle", distance)
    b.ask(f"At the same speed, how many kilometers can {p.he} cycle in {later} hours?")
    kph = b.step(f"{p.His} speed is @ kilometers per hour.", f"{distance} / {hours}")
    b.step(f"In {later} hours {p.he} cycles @ kilometers.", f"{kph} * {later}")


@_template("gsm8k_style")
def _lemonade_profit(b: _Builder) -> None:
    p, r = b.person(), b.rng
    cups, price, supplies = r.randint(15, 60), r.randint(1, 4), r.randint(5, 15)
    b.say(f"{p} sells {cups} cups of lemonade for ${price} each.", f"how many cups of lemonade does {p} sell", cups)
    b.say(f"The lemons and sugar cost {p.him} ${supplies}.", "how many dollars do the lemons and sugar cost", supplies)
    b.ask(f"How much profit does {p} make, in dollars?")
    sales = b.step(f"{p.He} takes in @ dollars.", f"{cups} * {price}")
    b.step(f"{p.His} profit is @ dollars.", f"{sales} - {supplies}")


@_template("gsm8k_style")
def _party_budget(b: _Builder) -> None:
    p, r = b.person(), b.rng
    while True:
        balloons, balloon_price, hats, hat_price = r.randint(5, 30), r.randint(1, 3), r.randint(4, 12), r.randint(2, 5)
        cake, friends = r.randint(15, 45), r.randint(2, 5)
        if (balloons * balloon_price + hats * hat_price + cake) % friends == 0:
            break
    b.say(f"{p} and {friends - 1} friends plan a party.")
    b.say(
        f"They buy {balloons} balloons at ${balloon_price} each and {hats} party hats at ${hat_price} each.",
        "how many party hats do they buy",
        hats,
    )
    b.say(f"The cake costs ${cake}.", "how many dollars does the cake cost", cake)
    b.ask(f"If the {friends} of them share the cost equally, how much does each pay, in dollars?")
    balloon_cost = b.step("The balloons cost @ dollars.", f"{balloons} * {balloon_price}")
    hat_cost = b.step("The hats cost @ dollars.", f"{hats} * {hat_price}")
    decorations = b.step("Balloons and hats cost @ dollars.", f"{balloon_cost} + {hat_cost}")
    total = b.step("With the cake the party costs @ dollars.", f"{decorations} + {cake}")
    b.step("Each of them pays @ dollars.", f"{total} / {friends}")


# ---------------------------------------------------------------------------
# MultiArith-style templates (easy evaluation set; wording disjoint from above)
# ---------------------------------------------------------------------------


@_template("multiarith_style")
def _waiter_customers(b: _Builder) -> None:
    p, r = b.person(), b.rng
    had = r.randint(8, 40)
    left, new = r.randint(1, had - 1), r.randint(2, 40)
    b.say(f"A waiter named {p} had {had} customers to wait on.")
    b.ask(f"If {left} customers left and {p.he} got another {new} customers, how many customers would {p.he} have?")
    remaining = b.step(f"{had} customers minus the {left} who left is @.", f"{had} - {left}")
    b.step("Adding the new ones gives @.", f"{remaining} + {new}")


@_template("multiarith_style")
def _halloween_candy(b: _Builder) -> None:
    p, r = b.person(), b.rng
    own, sister = r.randint(10, 60), r.randint(10, 60)
    ate = r.randint(5, own + sister - 1)
    b.say(
        f"For Halloween {p} and {p.his} sister combined the candy they received. "
        f"{p} had {own} pieces of candy while {p.his} sister had {sister}."
    )
    b.ask(f"If they ate {ate} pieces the first night, how many pieces do they have left?")
    together = b.step("Combined they had @ pieces.", f"{own} + {sister}")
    b.step("Left over: @ pieces.", f"{together} - {ate}")


@_template("multiarith_style")
def _video_game_enemies(b: _Builder) -> None:
    r = b.rng
    points, enemies = r.randint(3, 12), r.randint(6, 20)
    spared = r.randint(1, enemies - 1)
    b.say(f"In a video game, each enemy defeated gives you {points} points.")
    b.ask(
        f"If a level has {enemies} enemies total and you destroy all but {spared} of them, how many "
        "points would you earn?"
    )
    defeated = b.step("Enemies destroyed: @.", f"{enemies} - {spared}")
    b.step("Points earned: @.", f"{defeated} * {points}")


@_template("multiarith_style")
def _cafeteria_apples(b: _Builder) -> None:
    r = b.rng
    red, green = r.randint(5, 60), r.randint(5, 40)
    wanted = r.randint(1, red + green - 1)
    b.say(f"The school cafeteria ordered {red} red apples and {green} green apples for student lunches.")
    b.ask(f"But, if only {wanted} students wanted fruit, how many extra did the cafeteria end up with?")
    apples = b.step("Apples ordered: @.", f"{red} + {green}")
    b.step("Extra apples: @.", f"{apples} - {wanted}")


@_template("multiarith_style")
def _coloring_book_shelves(b: _Builder) -> None:
    r = b.rng
    goods = r.choice(["coloring books", "jigsaw puzzles", "board games", "video games", "comic books"])
    per_shelf, shelves, sold = r.randint(3, 9), r.randint(2, 9), r.randint(5, 40)
    stock = per_shelf * shelves + sold
    b.say(
        f"A store had {stock} {goods} in stock. They ended up putting them on sale and getting rid of {sold} of them."
    )
    b.ask(
        f"They put the ones they still had onto shelves with {per_shelf} on each shelf. How many shelves did they use?"
    )
    remaining = b.step(f"{goods.capitalize()} still in stock: @.", f"{stock} - {sold}")
    b.step("Shelves used: @.", f"{remaining} / {per_shelf}")


@_template("multiarith_style")
def _chocolate_bars(b: _Builder) -> None:
    p, r = b.person(), b.rng
    price, bars = r.randint(2, 8), r.randint(6, 20)
    unsold = r.randint(1, bars - 1)
    b.say(f"Each chocolate bar in a box cost ${price}.")
    b.ask(f"If a box had {bars} bars total and {p} sold all but {unsold} bars, how much money would {p.he} have made?")
    sold = b.step("Bars sold: @.", f"{bars} - {unsold}")
    b.step("Money made: @ dollars.", f"{sold} * {price}")


@_template("multiarith_style")
def _mowing_lawns(b: _Builder) -> None:
    p, r = b.person(), b.rng
    charge, lawns = r.randint(4, 20), r.randint(5, 20)
    forgot = r.randint(1, lawns - 1)
    b.say(f"{p} was making money mowing lawns. {p.He} charged ${charge} for each lawn.")
    b.ask(
        f"If {p.he} had {lawns} lawns to mow, but forgot to mow {forgot} of them, how much money "
        f"did {p.he} actually earn?"
    )
    mowed = b.step("Lawns mowed: @.", f"{lawns} - {forgot}")
    b.step("Money earned: @ dollars.", f"{mowed} * {charge}")


@_template("multiarith_style")
def _photo_albums(b: _Builder) -> None:
    p, r = b.person(), b.rng
    albums, per_album, first = r.randint(2, 9), r.randint(2, 10), r.randint(5, 40)
    photos = albums * per_album + first
    b.say(
        f"{p} uploaded {photos} pictures to Facebook. {p.He} put {first} pics into one album and "
        f"put the rest into {albums} different albums."
    )
    b.ask("How many pictures were in each of those albums?")
    rest = b.step("Pictures for the other albums: @.", f"{photos} - {first}")
    b.step("Pictures per album: @.", f"{rest} / {albums}")


@_template("multiarith_style")
def _florist_roses(b: _Builder) -> None:
    p, r = b.person(), b.rng
    flower = r.choice(["roses", "tulips", "daisies", "lilies", "carnations"])
    had = r.randint(10, 60)
    sold, picked = r.randint(1, had - 1), r.randint(5, 40)
    b.say(f"A florist named {p} had {had} {flower}.")
    b.ask(f"If {p.he} sold {sold} of them and then later picked {picked} more, how many {flower} would {p.he} have?")
    remaining = b.step(f"After selling: @ {flower}.", f"{had} - {sold}")
    b.step(f"After picking more: @ {flower}.", f"{remaining} + {picked}")


@_template("multiarith_style")
def _homework_problems(b: _Builder) -> None:
    p, r = b.person(), b.rng
    subject = r.choice(["reading", "science", "history", "spelling"])
    math_pages, other_pages, per_page = r.randint(2, 9), r.randint(2, 9), r.randint(2, 8)
    b.say(f"{p} had {math_pages} pages of math homework and {other_pages} pages of {subject} homework.")
    b.ask(f"If each page had {per_page} problems on it, how many problems did {p.he} have to complete total?")
    pages = b.step("Pages of homework: @.", f"{math_pages} + {other_pages}")
    b.step("Problems to complete: @.", f"{pages} * {per_page}")


@_template("multiarith_style")
def _arcade_tickets(b: _Builder) -> None:
    p, r = b.person(), b.rng
    game1, game2 = r.randint(3, 30), r.randint(3, 30)
    prize = r.choice(["hat", "yo-yo", "candy bar", "keychain", "bouncy ball"])
    spent = r.randint(1, game1 + game2 - 1)
    b.say(f"At the arcade {p} won {game1} tickets playing 'whack a mole' and {game2} tickets playing 'skee ball'.")
    b.ask(f"If {p.he} spent {spent} tickets on a {prize}, how many tickets does {p.he} have left?")
    won = b.step("Tickets won: @.", f"{game1} + {game2}")
    b.step("Tickets left: @.", f"{won} - {spent}")


@_template("multiarith_style")
def _online_players_lives(b: _Builder) -> None:
    r = b.rng
    friends, joined, lives = r.randint(2, 9), r.randint(1, 9), r.randint(2, 9)
    b.say(f"There were {friends} friends playing a video game online when {joined} more players joined the game.")
    b.ask(f"If each player had {lives} lives, how many lives did they have total?")
    players = b.step("Players in the game: @.", f"{friends} + {joined}")
    b.step("Total lives: @.", f"{players} * {lives}")


@_template("multiarith_style")
def _seeds_small_gardens(b: _Builder) -> None:
    p, r = b.person(), b.rng
    gardens, per_garden, big = r.randint(2, 9), r.randint(2, 8), r.randint(10, 50)
    seeds = gardens * per_garden + big
    b.say(
        f"{p} planted {seeds} seeds. {big} of them were planted in the big garden and the rest were "
        "put into small gardens."
    )
    b.ask(f"If each small garden got {per_garden} seeds, how many small gardens did {p} have?")
    rest = b.step("Seeds for small gardens: @.", f"{seeds} - {big}")
    b.step("Small gardens: @.", f"{rest} / {per_garden}")


@_template("multiarith_style")
def _recycling_bags(b: _Builder) -> None:
    p, r = b.person(), b.rng
    saturday, sunday, per_bag = r.randint(2, 9), r.randint(2, 9), r.randint(3, 12)
    b.say(f"For a recycling drive, {p} filled {saturday} bags on Saturday and {sunday} more bags on Sunday.")
    b.ask(f"If each bag had {per_bag} cans in it, how many cans did {p.he} pick up altogether?")
    bags = b.step("Bags filled: @.", f"{saturday} + {sunday}")
    b.step("Cans picked up: @.", f"{bags} * {per_bag}")


# ---------------------------------------------------------------------------
# Hard multi-step templates (4-7 steps; stand-in for the paper's hard set)
# ---------------------------------------------------------------------------


@_template("multistep_hard")
def _sale_with_shipping(b: _Builder) -> None:
    p, r = b.person(), b.rng
    thing = r.choice(["jacket", "lamp", "backpack", "pair of boots", "desk chair"])
    price, discount = 20 * r.randint(2, 15), r.choice([10, 15, 20, 25, 30, 40, 50])
    count, shipping = r.randint(2, 5), r.randint(4, 15)
    b.say(f"An online shop lists a {thing} at ${price}. During a sale every item is {discount}% off.")
    b.say(f"{p} orders {count} of them and pays a flat shipping fee of ${shipping}.")
    b.ask(f"How much does {p} pay in total, in dollars?")
    saving = b.step("The discount on one item is @ dollars.", f"{price} * {discount} / 100")
    sale_price = b.step("The sale price is @ dollars.", f"{price} - {saving}")
    items = b.step(f"{count} items cost @ dollars.", f"{sale_price} * {count}")
    b.step("With shipping the total is @ dollars.", f"{items} + {shipping}")


@_template("multistep_hard")
def _machines_combined_work(b: _Builder) -> None:
    r = b.rng
    a, c, together, alone = r.randint(20, 60), r.randint(15, 50), r.randint(2, 6), r.randint(1, 4)
    order = (a + c) * together + a * alone + r.randint(10, 200)
    b.say(f"Machine A makes {a} bolts per hour and machine B makes {c} bolts per hour.")
    b.say(
        f"Both machines run together for {together} hours, then machine B breaks down and machine A "
        f"works alone for {alone} more hours."
    )
    b.ask(f"The order is for {order} bolts. How many more bolts are still needed?")
    rate = b.step("Together the machines make @ bolts per hour.", f"{a} + {c}")
    joint = b.step("Working together they make @ bolts.", f"{rate} * {together}")
    solo = b.step("Machine A alone adds @ bolts.", f"{a} * {alone}")
    made = b.step("So far @ bolts are made.", f"{joint} + {solo}")
    b.step("Still needed: @ bolts.", f"{order} - {made}")


@_template("multistep_hard")
def _egg_cartons_profit(b: _Builder) -> None:
    p, r = b.person(), b.rng
    while True:
        per_day, days, price, feed = r.randint(8, 30), r.randint(5, 14), r.randint(3, 6), r.randint(5, 40)
        if (per_day * days // 12) * price > feed:
            break
    b.say(f"{p}'s hens lay {per_day} eggs a day. After {days} days {p.he} packs the eggs into cartons of 12.")
    b.say(f"{p.He} sells every full carton for ${price} and keeps any leftover eggs. Feed for those days cost ${feed}.")
    b.ask(f"What is {p}'s profit, in dollars?")
    eggs = b.step("The hens lay @ eggs.", f"{per_day} * {days}")
    cartons, _ = b.divide_with_remainder("Packing gives @.", eggs, 12)
    sales = b.step("The full cartons sell for @ dollars.", f"{cartons} * {price}")
    b.step("The profit is @ dollars.", f"{sales} - {feed}")


@_template("multistep_hard")
def _salary_savings(b: _Builder) -> None:
    p, r = b.person(), b.rng
    salary, percent, months = 100 * r.randint(15, 60), r.choice([5, 10, 15, 20, 25]), r.randint(3, 12)
    saved_total = salary * percent // 100 * months
    laptop, bonus = r.randint(saved_total // 4, saved_total - 1), r.randint(50, 500)
    b.say(f"{p} earns ${salary} a month and saves {percent}% of it.")
    b.say(
        f"After {months} months {p.he} spends ${laptop} on a laptop, and then receives a bonus of "
        f"${bonus}, which {p.he} also saves."
    )
    b.ask(f"How much is in {p.his} savings now, in dollars?")
    monthly = b.step(f"Each month {p.he} saves @ dollars.", f"{salary} * {percent} / 100")
    saved = b.step(f"After {months} months {p.he} has @ dollars.", f"{monthly} * {months}")
    after_laptop = b.step("After the laptop @ dollars remain.", f"{saved} - {laptop}")
    b.step(f"With the bonus {p.he} has @ dollars.", f"{after_laptop} + {bonus}")


@_template("multistep_hard")
def _train_average_speed(b: _Builder) -> None:
    r = b.rng
    while True:
        v1, t1, v2, t2 = r.randrange(40, 130, 5), r.randint(2, 5), r.randrange(40, 130, 5), r.randint(2, 5)
        if v1 != v2 and (v1 * t1 + v2 * t2) % (t1 + t2) == 0:
            break
    b.say(f"A train travels at {v1} km per hour for {t1} hours, then at {v2} km per hour for {t2} hours.")
    b.ask("What is its average speed over the whole trip, in km per hour?")
    d1 = b.step("The first part covers @ km.", f"{v1} * {t1}")
    d2 = b.step("The second part covers @ km.", f"{v2} * {t2}")
    distance = b.step("The whole trip is @ km.", f"{d1} + {d2}")
    hours = b.step("It takes @ hours.", f"{t1} + {t2}")
    b.step("The average speed is @ km per hour.", f"{distance} / {hours}")


@_template("multistep_hard")
def _fundraiser_split(b: _Builder) -> None:
    r = b.rng
    cookies, cookie_price = r.randint(20, 90), r.randint(1, 3)
    brownies, brownie_price = r.randint(10, 60), r.randint(2, 5)
    revenue = cookies * cookie_price + brownies * brownie_price
    charities = r.randint(2, 5)
    share = r.randint(revenue // (2 * charities), (revenue - 1) // charities)
    costs = revenue - charities * share
    b.say(f"A club sells {cookies} cookies at ${cookie_price} each and {brownies} brownies at ${brownie_price} each.")
    b.say(f"Ingredients cost ${costs}. The profit is split equally among {charities} charities.")
    b.ask("How much does each charity get, in dollars?")
    c = b.step("Cookies bring in @ dollars.", f"{cookies} * {cookie_price}")
    w = b.step("Brownies bring in @ dollars.", f"{brownies} * {brownie_price}")
    total = b.step("Sales total @ dollars.", f"{c} + {w}")
    profit = b.step("The profit is @ dollars.", f"{total} - {costs}")
    b.step("Each charity gets @ dollars.", f"{profit} / {charities}")


@_template("multistep_hard")
def _paint_cans(b: _Builder) -> None:
    r = b.rng
    length, height, coverage, price = r.randint(10, 20), r.randint(8, 10), r.choice([25, 50, 100]), r.randint(12, 40)
    walls = 4 * length * height
    unpainted = walls % coverage + coverage * r.randint(0, 1) or coverage
    b.say(
        f"A room has 4 walls, each {length} feet long and {height} feet high. The windows and door "
        f"take up {unpainted} square feet that are not painted."
    )
    b.say(f"One can of paint covers {coverage} square feet and costs ${price}.")
    b.ask("How much does the paint for the room cost, in dollars?")
    wall = b.step("One wall is @ square feet.", f"{length} * {height}")
    area = b.step("Four walls are @ square feet.", f"4 * {wall}")
    painted = b.step("The area to paint is @ square feet.", f"{area} - {unpainted}")
    cans = b.step("That needs @ cans.", f"{painted} / {coverage}")
    b.step("The paint costs @ dollars.", f"{cans} * {price}")


@_template("multistep_hard")
def _overtime_pay(b: _Builder) -> None:
    p, r = b.person(), b.rng
    rate, hours, weeks = 2 * r.randint(7, 20), r.randint(42, 55), r.randint(2, 4)
    b.say(f"{p} earns ${rate} per hour for the first 40 hours each week and time and a half for every hour over 40.")
    b.say(f"{p.He} works {hours} hours a week for {weeks} weeks.")
    b.ask(f"How much does {p.he} earn over the {weeks} weeks, in dollars?")
    extra = b.step("Overtime is @ hours a week.", f"{hours} - 40")
    ot_rate = b.step("The overtime rate is @ dollars an hour.", f"{rate} * 3 / 2")
    regular = b.step("Regular pay is @ dollars a week.", f"40 * {rate}")
    overtime = b.step("Overtime pay is @ dollars a week.", f"{extra} * {ot_rate}")
    weekly = b.step("Weekly pay is @ dollars.", f"{regular} + {overtime}")
    b.step(f"Over {weeks} weeks {p.he} earns @ dollars.", f"{weekly} * {weeks}")


@_template("multistep_hard")
def _population_change(b: _Builder) -> None:
    r = b.rng
    while True:
        people, grow, fall = 100 * r.randint(10, 90), r.choice([5, 10, 15, 20, 25]), r.choice([4, 5, 10, 20])
        if people * (100 + grow) * fall % 10_000 == 0:
            break
    b.say(f"A town has {people} residents. In the first year the population grows by {grow}%.")
    b.say(f"In the second year it falls by {fall}%.")
    b.ask("How many residents does the town have at the end of the second year?")
    growth = b.step("The first year adds @ residents.", f"{people} * {grow} / 100")
    year1 = b.step("After one year there are @ residents.", f"{people} + {growth}")
    loss = b.step("The second year loses @ residents.", f"{year1} * {fall} / 100")
    b.step("At the end there are @ residents.", f"{year1} - {loss}")


@_template("multistep_hard")
def _pool_pipes_leak(b: _Builder) -> None:
    r = b.rng
    first, second = r.randint(10, 40), r.randint(10, 40)
    leak, minutes, already = r.randint(2, 9), r.randint(10, 60), 50 * r.randint(1, 20)
    capacity = already + (first + second - leak) * minutes
    b.say(
        f"Two pipes fill a pool: the first adds {first} liters per minute and the second adds "
        f"{second} liters per minute, while a leak drains {leak} liters per minute."
    )
    b.say(f"The pool holds {capacity} liters and already contains {already} liters.")
    b.ask("How many minutes until the pool is full?")
    inflow = b.step("The pipes add @ liters per minute.", f"{first} + {second}")
    net = b.step("After the leak the pool gains @ liters per minute.", f"{inflow} - {leak}")
    missing = b.step("It still needs @ liters.", f"{capacity} - {already}")
    b.step("That takes @ minutes.", f"{missing} / {net}")


@_template("multistep_hard")
def _bookstore_inventory(b: _Builder) -> None:
    r = b.rng
    books, percent = 20 * r.randint(15, 60), r.choice([5, 10, 15, 20, 25, 30])
    tuesday, boxes, per_box = r.randint(5, 60), r.randint(2, 8), r.randint(12, 30)
    b.say(
        f"A bookstore has {books} books. On Monday it sells {percent}% of them, and on Tuesday it sells {tuesday} more."
    )
    b.say(f"Then a shipment of {boxes} boxes with {per_box} books each arrives.")
    b.ask("How many books does the store have now?")
    monday = b.step("Monday's sales are @ books.", f"{books} * {percent} / 100")
    after_monday = b.step("After Monday @ books remain.", f"{books} - {monday}")
    after_tuesday = b.step("After Tuesday @ books remain.", f"{after_monday} - {tuesday}")
    shipment = b.step("The shipment brings @ books.", f"{boxes} * {per_box}")
    b.step("The store now has @ books.", f"{after_tuesday} + {shipment}")


@_template("multistep_hard")
def _sales_commission(b: _Builder) -> None:
    p, r = b.person(), b.rng
    while True:
        base, percent = 100 * r.randint(10, 30), r.choice([2, 4, 5, 8, 10])
        threshold, sales = 1000 * r.randint(2, 10), 1000 * r.randint(12, 40)
        if (base + (sales - threshold) * percent // 100) % 4 == 0:
            break
    b.say(
        f"{p} is paid a base salary of ${base} a month plus a commission of {percent}% on all sales above ${threshold}."
    )
    b.say(f"This month {p.he} sold ${sales} worth of goods. {p.He} puts a quarter of {p.his} total pay into savings.")
    b.ask(f"How much does {p} save this month, in dollars?")
    above = b.step("Sales above the threshold are @ dollars.", f"{sales} - {threshold}")
    commission = b.step("The commission is @ dollars.", f"{above} * {percent} / 100")
    pay = b.step("Total pay is @ dollars.", f"{base} + {commission}")
    b.step("A quarter of it is @ dollars.", f"{pay} / 4")


@_template("multistep_hard")
def _tournament_teams(b: _Builder) -> None:
    r = b.rng
    while True:
        students, size = r.randint(30, 120), r.randint(4, 9)
        if students % size:
            break
    balls, whistles = r.randint(2, 5), r.randint(2, 3)
    b.say(
        f"{students} students sign up for a tournament. They form as many teams of {size} as "
        "possible, and the students left over become referees."
    )
    b.say(f"Each team gets {balls} balls and each referee gets {whistles} whistles.")
    b.ask("How many balls and whistles are needed altogether?")
    teams, referees = b.divide_with_remainder(
        "Forming teams gives @, and those left over are referees.", students, size
    )
    ball_count = b.step("The teams need @ balls.", f"{teams} * {balls}")
    whistle_count = b.step("The referees need @ whistles.", f"{referees} * {whistles}")
    b.step("Altogether @ items are needed.", f"{ball_count} + {whistle_count}")


@_template("multistep_hard")
def _delivery_fuel_cost(b: _Builder) -> None:
    r = b.rng
    while True:
        km_per_liter, trips, distance, days = r.randint(5, 12), r.randint(2, 5), r.randint(10, 40), r.randint(3, 7)
        if 2 * distance * trips * days % km_per_liter == 0:
            break
    price = r.randint(2, 3)
    b.say(
        f"A delivery van uses 1 liter of fuel every {km_per_liter} km. It makes {trips} round trips "
        f"a day to a warehouse {distance} km away, for {days} days."
    )
    b.say(f"Fuel costs ${price} per liter.")
    b.ask("How much does the fuel cost, in dollars?")
    round_trip = b.step("One round trip is @ km.", f"2 * {distance}")
    daily = b.step("Each day the van drives @ km.", f"{round_trip} * {trips}")
    total = b.step(f"Over {days} days it drives @ km.", f"{daily} * {days}")
    liters = b.step("That uses @ liters.", f"{total} / {km_per_liter}")
    b.step("The fuel costs @ dollars.", f"{liters} * {price}")


@_template("multistep_hard")
def _catering_order(b: _Builder) -> None:
    r = b.rng
    while True:
        guests, each = r.randint(20, 120), r.randint(2, 3)
        tray, tray_price = r.choice([8, 10, 12, 16]), r.randint(15, 40)
        drink, fee, organisers = r.randint(1, 4), r.randint(10, 60), r.randint(2, 6)
        trays = guests * each // tray
        if guests * each % tray == 0 and (trays * tray_price + guests * drink + fee) % organisers == 0:
            break
    b.say(
        f"A caterer serves {guests} guests, and every guest gets {each} sandwiches. Sandwiches come "
        f"on trays of {tray}, and each tray costs ${tray_price}."
    )
    b.say(f"Every guest also gets one drink costing ${drink}, and delivery costs ${fee}.")
    b.ask(f"The {organisers} organisers split the bill equally. How much does each organiser pay, in dollars?")
    sandwiches = b.step("The guests need @ sandwiches.", f"{guests} * {each}")
    tray_count = b.step("That is @ trays.", f"{sandwiches} / {tray}")
    food = b.step("The trays cost @ dollars.", f"{tray_count} * {tray_price}")
    drinks = b.step("The drinks cost @ dollars.", f"{guests} * {drink}")
    subtotal = b.step("Food and drinks cost @ dollars.", f"{food} + {drinks}")
    bill = b.step("With delivery the bill is @ dollars.", f"{subtotal} + {fee}")
    b.step("Each organiser pays @ dollars.", f"{bill} / {organisers}")


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
