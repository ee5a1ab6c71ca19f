"""MultiArith-style templates: the easy evaluation set, worded apart from the training templates."""

from __future__ import annotations


from rim.data.math_generators.builder import (
    _Builder,
    _template,
)


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
