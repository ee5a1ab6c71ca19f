"""Hard multi-step templates (4-7 steps): a stand-in for the paper's hard evaluation set."""

from __future__ import annotations


from rim.data.math_generators.builder import (
    _Builder,
    _template,
)


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
