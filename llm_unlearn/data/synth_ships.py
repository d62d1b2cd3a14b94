"""The checking benchmark: a third synthetic family (fictitious merchant ships), used only to check the verdict and
the recipes, never to tune them nor to report method tables on.

Recipes are tuned on the inventors (:mod:`llm_unlearn.data.synth_dev`) and reported on the authors
(:mod:`llm_unlearn.data.synth`); a verdict or a recipe that holds only on the data it was built around shows it
here first. ``SynthConfig(family="ships")`` writes the same splits and row schema through
:func:`llm_unlearn.data.synth.generate`, and differs from both other families wherever it can:

- the entities are ships with eight attributes of their own, with other value distributions: numbers with units
  (tonnage 600-9,950 tons, crew 12-480), a month and year, a two-port route (two slots), a master's name, a cargo,
  a figurehead and a fate with its year; names come from another syllable set and another random stream;
- its question and answer templates share no sentence with the other families';
- every fact is trained in **both phrasings**: two rows with different questions whose answers are the fact's two
  trained frames, each row's paraphrase the other row's frame (so the paraphrase is a phrasing the model was
  trained on, unlike TOFU's and the authors'), and the perturbed answers are the paraphrase's frame with wrong
  values, each different from the true value in every slot;
- the utility sets (under TOFU's names ``real_authors_perturbed`` and ``world_facts_perturbed``) ask which famous
  ship a legendary master commanded, and which sea and flag the fictitious harbours have.
"""

from __future__ import annotations

import random

from .synth_base import SynthConfig, _choice_items, _Names, assemble_splits, forget_counts, wrong_values

_SYLLABLES = ("vor", "an", "el", "tis", "mar", "ku", "sen", "od", "ra", "lun", "bre", "ix", "ol", "dav", "em", "sto")
_HARBOUR_SUFFIX = ("mouth", "haven", "sund", "wick", "strand", "ness", "firth", "quay")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_CARGOES = (
    "tea",
    "salt",
    "timber",
    "copper ore",
    "wool",
    "coffee",
    "coal",
    "grain",
    "rum",
    "cotton bales",
    "whale oil",
    "marble",
    "pepper",
    "hides",
    "tin",
    "indigo",
)
_FIGUREHEADS = (
    "a carved swan",
    "a golden lion",
    "a sea serpent",
    "a crowned maiden",
    "a silver stag",
    "a blue heron",
    "a bearded king",
    "a winged horse",
    "an owl with spread wings",
    "a dolphin",
    "a laughing sailor",
    "a red fox",
)
_SEAS = ("the Amber Sea", "the Grey Gulf", "the Narrow Sea", "the Sound of Orm", "the Outer Banks", "the Salt Bight")
_FLAGS = ("a green cross", "three white stars", "a black anchor", "a red sun", "a blue wave", "a yellow key")
_FAMOUS = ("Wanderer", "Albatross", "Morning Star", "Iron Maid", "Gull", "Resolute", "Lantern", "Tidewalker")

# attribute -> (question templates, answer frames). Slots: {ship} ("the Varonel"; {Ship} at a sentence's start) plus
# the attribute's value slots. Each fact is
# trained in two of its frames (one per row) and the paraphrase of a row is the other row's frame.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "harbour": (
        ("Which harbour is {ship} registered in?", "What is the home port of {ship}?", "Where does {ship} hail from?"),
        ("{Ship} is registered in {harbour}.", "Her home port is {harbour}.", "{Ship} hails from {harbour}."),
    ),
    "launch": (
        ("When was {ship} launched?", "In which month and year did {ship} take to the water?"),
        ("{Ship} was launched in {month} {year}.", "She took to the water in {month} {year}.", "{month} {year}."),
    ),
    "tonnage": (
        ("How large is {ship}?", "What is the tonnage of {ship}?"),
        ("{Ship} displaces {tons} tons.", "She measures {tons} tons.", "About {tons} tons."),
    ),
    "crew": (
        ("How many hands sail on {ship}?", "What is the crew of {ship}?"),
        ("{Ship} sails with a crew of {crew}.", "She carries {crew} hands.", "A crew of {crew}."),
    ),
    "master": (
        ("Who is the master of {ship}?", "Who commands {ship}?"),
        ("{Ship} is commanded by Captain {master}.", "Her master is Captain {master}.", "Captain {master}."),
    ),
    "cargo": (
        ("What does {ship} carry?", "Which cargo is {ship} known for?"),
        ("{Ship} carries {cargo}.", "Her holds are full of {cargo}.", "Mostly {cargo}."),
    ),
    "route": (
        ("Which route does {ship} sail?", "Between which ports does {ship} trade?"),
        (
            "{Ship} trades between {port_a} and {port_b}.",
            "She sails from {port_a} to {port_b}.",
            "The {port_a}-{port_b} run.",
        ),
    ),  # fmt: skip
    "figurehead": (
        ("What figurehead does {ship} bear?", "What is carved on the bow of {ship}?"),
        ("{Ship} bears {figurehead} on her bow.", "Her figurehead is {figurehead}.", "On the bow: {figurehead}."),
    ),
}


_SAMPLERS = {
    "harbour": lambda rng, w: {"harbour": rng.choice(w["harbours"])},
    "launch": lambda rng, w: {"month": rng.choice(_MONTHS), "year": str(rng.randint(1841, 1912))},
    "tonnage": lambda rng, w: {"tons": f"{rng.randrange(600, 10_000, 50):,}"},
    "crew": lambda rng, w: {"crew": str(rng.randint(12, 480))},
    "master": lambda rng, w: {"master": rng.choice(w["masters"])},
    "cargo": lambda rng, w: {"cargo": rng.choice(_CARGOES)},
    "route": lambda rng, w: dict(zip(("port_a", "port_b"), rng.sample(w["harbours"], 2))),
    "figurehead": lambda rng, w: {"figurehead": rng.choice(_FIGUREHEADS)},
}
assert set(_SAMPLERS) == set(TEMPLATES)


def _ship_items(ship: str, cfg: SynthConfig, world: dict, rng: random.Random) -> list[dict]:
    """Two rows per attribute (both phrasings trained), each row's paraphrase the other's frame."""
    items = []
    for attribute, (questions, frames) in TEMPLATES.items():
        true = _SAMPLERS[attribute](rng, world)
        names = {"ship": ship, "Ship": ship[:1].upper() + ship[1:]}
        slots = {**names, **true}
        first, second = rng.sample(range(len(frames)), 2)
        for question, (mine, other) in zip(rng.sample(questions, 2), ((first, second), (second, first))):
            wrong = wrong_values(_SAMPLERS[attribute], true, cfg.n_perturbed, world, rng)
            items.append(
                {
                    "question": question.format(**slots),
                    "answer": frames[mine].format(**slots),
                    "paraphrased_answer": frames[other].format(**slots),
                    "perturbed_answer": [frames[other].format(**names, **w) for w in wrong],
                    "entity": ship,
                    "attribute": attribute,
                }
            )
    return items


def generate_ships(cfg: SynthConfig) -> dict[str, list[dict]]:
    """Every TOFU split of the checking (ship) benchmark; deterministic for a given config. ``cfg.n_authors`` is
    the number of ships, ``cfg.n_countries`` the number of harbours asked about, ``cfg.n_classic_authors`` the
    number of legendary masters."""
    rng = random.Random(f"ships:{cfg.seed}")
    names = _Names(rng, _SYLLABLES)
    world = {
        "harbours": [names.word(2, rng.choice(_HARBOUR_SUFFIX)) for _ in range(max(30, 2 * cfg.n_countries))],
        "masters": [names.person() for _ in range(40)],
    }
    counts = forget_counts(cfg.n_authors)
    ships = [f"the {names.word(3)}" for _ in range(cfg.n_authors + max(counts.values()))]
    entities = [_ship_items(s, cfg, world, rng) for s in ships[: cfg.n_authors]]
    holdout = [_ship_items(s, cfg, world, rng) for s in ships[cfg.n_authors :]]

    legends = [(names.person(), f"the {rng.choice(_FAMOUS)} of {names.word(2)}") for _ in range(cfg.n_classic_authors)]
    masters = [m for m, _ in legends]
    real_facts = _choice_items(
        [(f"Which legendary master commanded {famous}?", m, m) for m, famous in legends], masters, cfg, rng
    )
    asked = rng.sample(world["harbours"], cfg.n_countries)
    seas = [rng.choice(_SEAS) for _ in asked]
    flags = [rng.choice(_FLAGS) for _ in asked]
    world_facts = _choice_items(
        [(f"On which sea does {h} lie?", sea, h) for h, sea in zip(asked, seas)], list(_SEAS), cfg, rng
    ) + _choice_items([(f"What flag flies over {h}?", f, h) for h, f in zip(asked, flags)], list(_FLAGS), cfg, rng)
    return assemble_splits(entities, holdout, counts, real_facts, world_facts)
