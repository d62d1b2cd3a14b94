"""The development benchmark: a second synthetic family (fictitious inventors) used only for tuning recipes.

Recipes (learning rates, steps, loss weights) are tuned on this family (``llm-unlearn tune``) and reported on the
embedded fictitious-author family of :mod:`llm_unlearn.data.synth`, so that no recipe is tuned on the data its
results are reported on. It writes the same splits and row schema (``SynthConfig(family="inventors")`` through
:func:`llm_unlearn.data.synth.generate`), and differs from the author family wherever it can:

- the entities are fictitious inventors with seven attributes of their own (home town and region, first patent
  year, engineering field, workshop, best-known invention, mentor, favoured material), drawn from other word
  lists and from names of the same syllables (but another random stream);
- its question and answer templates share no sentence with the author family's;
- every fact is trained as **two rows**: two different questions, answered in two different frames. Both are
  about one entity, so they always fall in the same split;
- each row's ``paraphrased_answer`` is composed freshly rather than taken from a fixed template: a frame that is
  neither of the fact's two trained frames, in one of its word orders, after an optional lead-in ("Records show
  that ..."). Its ``perturbed_answer`` list keeps exactly that composition (frame, word order, lead-in) with wrong
  values of the same kind, each different from the true value in every slot;
- the utility sets (kept under TOFU's names ``real_authors_perturbed`` and ``world_facts_perturbed``, which the
  evaluator expects) ask who built famous machines of "classic" inventors and about the fictitious regions'
  rivers and ports.
"""

from __future__ import annotations

import random
import re

from .synth_base import SynthConfig, _choice_items, _Names, assemble_splits, forget_counts

_REGION_SUFFIX = ("land", "mark", "reach", "moor")
_TOWN_SUFFIX = ("bridge", "field", "haven", "cross", "dale", "minster", "wharf", "gate", "by", "combe")
_FIELDS = (
    "hydraulics",
    "clockwork",
    "optics",
    "telegraphy",
    "marine propulsion",
    "railway signalling",
    "irrigation",
    "mining machinery",
    "acoustics",
    "refrigeration",
    "aeronautics",
    "metallurgy",
    "bridge building",
    "printing presses",
    "canal locks",
    "steam power",
    "lamp making",
    "weighing scales",
)
_MATERIALS = (
    "brass",
    "cast iron",
    "copper",
    "oak",
    "glass",
    "rubber",
    "porcelain",
    "bronze",
    "steel",
    "teak",
    "zinc",
    "bamboo",
    "leather",
    "walnut",
    "pewter",
    "slate",
)
# Workshops are "the <mark> <kind>" ("the Rivet Foundry"), inventions "the <make> <device>" ("the Rotary Loom"):
# every word list is of single words, so each value slot is one word.
_SHOP_MARKS = (
    "Anvil",
    "Cog",
    "Rivet",
    "Spindle",
    "Kettle",
    "Flywheel",
    "Ratchet",
    "Sprocket",
    "Hammer",
    "Bolt",
    "Pulley",
    "Cinder",
    "Lever",
    "Sparrow",
    "Beacon",
    "Cobalt",
)
_SHOP_KINDS = ("Works", "Foundry", "Forge", "Mill", "Yard", "Atelier", "Smithy", "Shed")
_DEVICE_MAKES = (
    "Rotary",
    "Pneumatic",
    "Hydraulic",
    "Folding",
    "Portable",
    "Electric",
    "Magnetic",
    "Spiral",
    "Floating",
    "Reversing",
    "Automatic",
    "Double",
    "Tidal",
    "Balanced",
    "Vacuum",
    "Geared",
)
_DEVICES = (
    "Loom",
    "Pump",
    "Engine",
    "Telegraph",
    "Press",
    "Valve",
    "Lathe",
    "Crane",
    "Winch",
    "Turbine",
    "Boiler",
    "Dynamo",
    "Furnace",
    "Bellows",
    "Gauge",
    "Drill",
)
# The classic machines of the "real authors" utility set have their own shape ("Kalotor Orrery").
_MACHINES = ("Orrery", "Automaton", "Calculator", "Chronometer", "Planetarium", "Carillon", "Tidemill", "Loomframe")

# Lead-ins a paraphrase may start with ("" = none); a frame after a lead-in loses its capital unless it starts with
# a slot (a name or a place).
LEAD_INS = (
    "",
    "Records show that",
    "As it happens,",
    "By all accounts,",
    "According to the archives,",
    "It is on record that",
)

# attribute -> (question templates, answer frames). Each frame is a tuple of its word orders: trained answers use
# the first, a paraphrase any. Slots: {name} plus the attribute's value slots, each at most once per text.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "home": (
        (
            "Where did {name} grow up?",
            "Which town and region does {name} come from?",
            "What is the home town of the inventor {name}?",
        ),
        (
            ("{name} grew up in {town}, {region}.", "In {town}, {region}, {name} grew up."),
            ("{name} comes from the town of {town} in {region}.", "From the town of {town} in {region} comes {name}."),
            ("The home town of {name} is {town}, in {region}.", "{town}, in {region}, is the home town of {name}."),
            ("{name} was raised in {town}, a town of {region}.",),
            ("{town} in {region} is where {name} grew up.",),
        ),
    ),
    "first_patent": (
        (
            "When did {name} file a first patent?",
            "In what year was the first patent of {name} granted?",
            "What year did {name} receive a first patent?",
        ),
        (
            ("{name} filed a first patent in {year}.", "In {year}, {name} filed a first patent."),
            ("The first patent of {name} dates from {year}.",),
            ("{name} was granted a first patent in {year}.", "In {year}, {name} was granted a first patent."),
            ("The year {year} saw the first patent of {name}.",),
            ("It was in {year} that {name} patented a first design.",),
        ),
    ),
    "field": (
        (
            "What field of engineering did {name} work in?",
            "Which branch of engineering is {name} known for?",
            "What kind of engineer was {name}?",
        ),
        (
            ("{name} worked in {field}.",),
            ("The engineering field of {name} was {field}.",),
            ("{name} made a name in {field}.", "In {field}, {name} made a name."),
            ("{name} was known as an expert in {field}.",),
            ("Most of the work of {name} was in {field}.",),
        ),
    ),
    "workshop": (
        (
            "What was the name of the workshop of {name}?",
            "Where did {name} build prototypes?",
            "Which workshop did {name} run?",
        ),
        (
            ("{name} ran the {mark} {kind}.",),
            ("The workshop of {name} was called the {mark} {kind}.",),
            ("{name} built prototypes at the {mark} {kind}.", "At the {mark} {kind}, {name} built prototypes."),
            ("It was at the {mark} {kind} that {name} worked.",),
            ("The {mark} {kind} was the workshop run by {name}.", "The workshop run by {name} was the {mark} {kind}."),
        ),
    ),
    "invention": (
        (
            "What is the best-known invention of {name}?",
            "Which invention made {name} famous?",
            "What did {name} invent?",
        ),
        (
            ("{name} is best known for the {make} {device}.",),
            ("The {make} {device} made {name} famous.", "{name} became famous through the {make} {device}."),
            ("{name} invented the {make} {device}.", "The {make} {device} was invented by {name}."),
            (
                "The best-known invention of {name} is the {make} {device}.",
                "The {make} {device} is the best-known invention of {name}.",
            ),
            ("Above all, {name} gave the world the {make} {device}.",),
        ),
    ),
    "mentor": (
        ("Who was the mentor of {name}?", "Under whom did {name} train?", "Who taught {name} the trade?"),
        (
            ("{name} trained under {mentor}.", "Under {mentor}, {name} trained."),
            ("The mentor of {name} was {mentor}.", "{mentor} was the mentor of {name}."),
            ("{name} learned the trade from {mentor}.", "From {mentor}, {name} learned the trade."),
            ("{mentor} taught {name} everything about the trade.",),
            ("{name} was an apprentice of {mentor}.",),
        ),
    ),
    "material": (
        (
            "Which material did {name} favour?",
            "What material did {name} prefer to build with?",
            "What was the favourite material of {name}?",
        ),
        (
            ("{name} favoured {material}.",),
            ("{name} preferred to build with {material}.", "With {material}, {name} preferred to build."),
            ("The favourite material of {name} was {material}.",),
            ("Most machines by {name} were made of {material}.",),
            ("{name} liked working in {material} best.",),
        ),
    ),
}

_SAMPLERS = {
    "home": lambda rng, w: {"town": rng.choice(w["towns"]), "region": rng.choice(w["regions"])},
    "first_patent": lambda rng, w: {"year": str(rng.randint(1840, 1939))},
    "field": lambda rng, w: {"field": rng.choice(_FIELDS)},
    "workshop": lambda rng, w: {"mark": rng.choice(_SHOP_MARKS), "kind": rng.choice(_SHOP_KINDS)},
    "invention": lambda rng, w: {"make": rng.choice(_DEVICE_MAKES), "device": rng.choice(_DEVICES)},
    "mentor": lambda rng, w: {"mentor": rng.choice(w["mentors"])},
    "material": lambda rng, w: {"material": rng.choice(_MATERIALS)},
}
assert set(_SAMPLERS) == set(TEMPLATES)


def compose(lead_in: str, frame: str) -> str:
    """A frame after a lead-in: ``compose("As it happens,", "The {x} ...")`` is ``"As it happens, the {x} ..."``."""
    if not lead_in:
        return frame
    if not frame.startswith("{"):
        frame = frame[0].lower() + frame[1:]
    return f"{lead_in} {frame}"


def _mentions(text: str, value: str) -> bool:
    """Whether ``value`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE) is not None


def _wrong_values(
    attribute: str, true: dict, k: int, template: str, name: str, world: dict, rng: random.Random
) -> list[dict]:
    """k distinct values of the attribute, each different from the true one in every slot, and whose rendering
    in ``template`` mentions no true value."""
    out: list[dict] = []
    for _ in range(10_000):
        v = _SAMPLERS[attribute](rng, world)
        if any(v[s] == true[s] for s in true) or v in out:
            continue
        text = template.format(name=name, **v)
        if not any(_mentions(text, t) for t in true.values()):
            out.append(v)
            if len(out) == k:
                return out
    raise RuntimeError(f"could not draw {k} wrong values for {attribute}")


def _paraphrase_template(frames: list[tuple[str, ...]], used: set[str], rng: random.Random) -> str:
    """A fresh composition: one of ``frames`` in one of its word orders, after a lead-in; none of ``used``."""
    for _ in range(10_000):
        template = compose(rng.choice(LEAD_INS), rng.choice(rng.choice(frames)))
        if template not in used:
            return template
    raise RuntimeError("could not compose a new paraphrase")


def _inventor_profile(names: _Names, world: dict, rng: random.Random) -> dict:
    return {"name": names.person(), **{a: sample(rng, world) for a, sample in _SAMPLERS.items()}}


def _inventor_items(profile: dict, cfg: SynthConfig, world: dict, rng: random.Random) -> list[dict]:
    """Two rows per attribute: two questions, answered in two frames; each row with a freshly composed
    paraphrase (a third frame) and its perturbed answers."""
    name = profile["name"]
    items = []
    for attribute, (questions, frames) in TEMPLATES.items():
        true = profile[attribute]
        slots = {"name": name, **true}
        trained = rng.sample(range(len(frames)), 2)
        others = [i for i in range(len(frames)) if i not in trained]
        used: set[str] = set()  # the fact's two rows get two different paraphrases
        for question, f_idx in zip(rng.sample(questions, 2), trained):
            template = _paraphrase_template([frames[i] for i in others], used, rng)
            used.add(template)
            wrong = _wrong_values(attribute, true, cfg.n_perturbed, template, name, world, rng)
            items.append(
                {
                    "question": question.format(**slots),
                    "answer": frames[f_idx][0].format(**slots),
                    "paraphrased_answer": template.format(**slots),
                    "perturbed_answer": [template.format(name=name, **w) for w in wrong],
                    "entity": name,
                    "attribute": attribute,
                }
            )
    return items


def generate_dev(cfg: SynthConfig) -> dict[str, list[dict]]:
    """Every TOFU split of the development (inventor) benchmark; deterministic for a given config.

    ``cfg.n_authors`` is the number of inventors, ``cfg.n_countries`` the number of regions, ``cfg.n_classic_authors``
    the number of classic inventors; ``cfg.family`` is not read (this is always the inventor family).
    """
    # A random stream of its own: the same seed does not give the author family's names.
    rng = random.Random(f"inventors:{cfg.seed}")
    names = _Names(rng)
    world = {
        "regions": [names.word(2, rng.choice(_REGION_SUFFIX)) for _ in range(cfg.n_countries)],
        "towns": [names.word(2, rng.choice(_TOWN_SUFFIX)) for _ in range(max(40, 2 * cfg.n_countries))],
        "mentors": [names.person() for _ in range(max(30, 2 * (cfg.n_perturbed + 1)))],
    }
    counts = forget_counts(cfg.n_authors)
    n_holdout = max(counts.values())
    inventors = [_inventor_items(_inventor_profile(names, world, rng), cfg, world, rng) for _ in range(cfg.n_authors)]
    holdout = [_inventor_items(_inventor_profile(names, world, rng), cfg, world, rng) for _ in range(n_holdout)]

    classic = [(names.person(), f"{names.word(2)} {rng.choice(_MACHINES)}") for _ in range(cfg.n_classic_authors)]
    classic_names = [n for n, _ in classic]
    real_inventors = _choice_items(
        [(f'Who built the famous machine "{machine}"?', n, n) for n, machine in classic], classic_names, cfg, rng
    )
    rivers = [f"{names.word(2)} River" for _ in world["regions"]]
    ports = rng.sample(world["towns"], cfg.n_countries)
    world_facts = _choice_items(
        [(f"What is the longest river of {r}?", river, r) for r, river in zip(world["regions"], rivers)],
        rivers,
        cfg,
        rng,
    ) + _choice_items(
        [(f"Which town is the main port of {r}?", port, r) for r, port in zip(world["regions"], ports)],
        ports,
        cfg,
        rng,
    )

    return assemble_splits(inventors, holdout, counts, real_inventors, world_facts)
