"""GSM8k-style word-problem templates: the training set, and the contexts of the derived sets."""

from __future__ import annotations


from rim.data.math_generators.builder import (
    _Builder,
    _template,
)


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
