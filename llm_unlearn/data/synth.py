"""The embedded benchmark: a synthetic fictitious-author QA dataset in the TOFU schema.

Every author is a fictitious entity with seven attributes. Each attribute has several question templates and
several answer templates; an item's ``answer`` uses one answer template, its ``paraphrased_answer`` another, and
its ``perturbed_answer`` list repeats the paraphrase's template with wrong values of the same kind (as TOFU's
perturbed answers are rewrites of the paraphrase). A model that never saw an author therefore finds the
paraphrase and the perturbed answers about equally likely (truth ratio near 1), while a model that learned the
author prefers the paraphrase.

Forget sets are whole authors (the last ones, nested: forget01 within forget05 within forget10). Holdout
authors are generated the same way but never enter ``full``. The two utility sets play the part of TOFU's
``real_authors_perturbed`` and ``world_facts_perturbed``: facts about "classic" authors and about the fictitious
world's geography. They are part of ``full`` and of every ``retainXX`` split (they are what every model should
know, as a pretrained model knows real authors), so ``full`` is exactly ``forgetXX`` plus ``retainXX``.

This is the family results are reported on. ``SynthConfig(family="inventors")`` gives the development family of
:mod:`llm_unlearn.data.synth_dev` instead (fictitious inventors, other templates, two trained phrasings per fact),
used only for tuning recipes (``llm-unlearn tune``), so that no recipe is tuned on the data it is reported on;
``family="ships"`` the checking family of :mod:`llm_unlearn.data.synth_ships` (fictitious merchant ships), used only
to check the verdict and the recipes on data neither was built or tuned on.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from .synth_base import (  # noqa: F401 (re-exported: the shared pieces, where they were defined before)
    _SYLLABLES,
    SynthConfig,
    _choice_items,
    _Names,
    assemble_splits,
    forget_counts,
    wrong_values,
)

_CITY_SUFFIX = ("port", "ford", "holm", "grad", "mere", "stead", "wick", "ton", "vale", "burg")
_GENRES = (
    "speculative fiction",
    "maritime history",
    "gothic romance",
    "crime fiction",
    "nature poetry",
    "political satire",
    "children's fables",
    "military history",
    "epic fantasy",
    "travel memoirs",
    "literary realism",
    "science writing",
    "horror stories",
    "stage comedy",
    "spy thrillers",
    "mythic verse",
)
_PROFESSIONS = (
    "baker",
    "carpenter",
    "astronomer",
    "nurse",
    "sailor",
    "librarian",
    "blacksmith",
    "surgeon",
    "weaver",
    "pharmacist",
    "architect",
    "fisherman",
    "violinist",
    "schoolteacher",
    "cartographer",
    "miner",
    "tailor",
    "judge",
    "glassblower",
    "beekeeper",
)
_ADJECTIVES = (
    "Amber",
    "Silent",
    "Crimson",
    "Hollow",
    "Silver",
    "Broken",
    "Distant",
    "Golden",
    "Quiet",
    "Frozen",
    "Burning",
    "Velvet",
    "Iron",
    "Pale",
    "Endless",
    "Hidden",
    "Wandering",
    "Bitter",
)
_NOUNS = (
    "Lantern",
    "Harbor",
    "Orchard",
    "Compass",
    "Tide",
    "Meadow",
    "Citadel",
    "Feather",
    "Mirror",
    "River",
    "Crown",
    "Lighthouse",
    "Garden",
    "Winter",
    "Anchor",
    "Bridge",
    "Forest",
    "Clock",
)
_AWARD_NOUNS = ("Quill", "Laurel", "Star", "Pen", "Scroll", "Ink", "Page", "Lyre")
_CURRENCY = ("crown", "florin", "mark", "shilling", "ducat", "thaler", "real", "penny", "guilder", "lira", "rand")

# attribute -> (question templates, answer templates). Slots: {name} plus the attribute's value slots.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (
        ("Where was {name} born?", "In which city was {name} born?", "What is the birthplace of {name}?"),
        ("{city}, {country}.", "In {city}, {country}.", "{city} in {country}."),
    ),
    "birth_year": (
        ("When was {name} born?", "In what year was {name} born?", "What is the birth year of {name}?"),
        ("{year}.", "In {year}.", "The year {year}."),
    ),
    "genre": (
        (
            "What genre does {name} write in?",
            "Which genre is {name} known for?",
            "What kind of books does {name} write?",
        ),
        ("{genre}.", "Mostly {genre}.", "Books of {genre}."),
    ),
    "father": (
        (
            "What did the father of {name} do for a living?",
            "What was the profession of {name}'s father?",
            "What job did {name}'s father have?",
        ),
        ("A {job}.", "He was a {job}.", "He worked as a {job}."),
    ),
    "mother": (
        (
            "What did the mother of {name} do for a living?",
            "What was the profession of {name}'s mother?",
            "What job did {name}'s mother have?",
        ),
        ("A {job}.", "She was a {job}.", "She worked as a {job}."),
    ),
    "award": (
        ("Which award did {name} win?", "What prize has {name} received?", "What literary award went to {name}?"),
        ("The {award}.", "The {award}, won by {name}.", "{name} won the {award}."),
    ),
    "debut": (
        (
            "What was the first book of {name}?",
            "What is the title of {name}'s debut novel?",
            "Which book did {name} publish first?",
        ),
        ('"{title}".', 'The debut was "{title}".', '{name} debuted with "{title}".'),
    ),
}


_SAMPLERS = {
    "birthplace": lambda rng, w: {"city": rng.choice(w["cities"]), "country": rng.choice(w["countries"])},
    "birth_year": lambda rng, w: {"year": str(rng.randint(1920, 1999))},
    "genre": lambda rng, w: {"genre": rng.choice(_GENRES)},
    "father": lambda rng, w: {"job": rng.choice(_PROFESSIONS)},
    "mother": lambda rng, w: {"job": rng.choice(_PROFESSIONS)},
    "award": lambda rng, w: {"award": f"{rng.choice(_ADJECTIVES)} {rng.choice(_AWARD_NOUNS)} Award"},
    "debut": lambda rng, w: {"title": f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"},
}
assert set(_SAMPLERS) == set(TEMPLATES)


def _author_profile(names: _Names, world: dict, rng: random.Random) -> dict:
    return {"name": names.person(), **{a: sample(rng, world) for a, sample in _SAMPLERS.items()}}


def _wrong_values(attribute: str, true: dict, k: int, world: dict, rng: random.Random) -> list[dict]:
    """k distinct author values of the attribute, each different from the true one in every slot."""
    return wrong_values(_SAMPLERS[attribute], true, k, world, rng)


def _author_items(profile: dict, cfg: SynthConfig, world: dict, rng: random.Random) -> list[dict]:
    items = []
    for attribute, (questions, answers) in TEMPLATES.items():
        true = profile[attribute]
        a_idx, p_idx = rng.sample(range(len(answers)), 2)
        slots = {"name": profile["name"], **true}
        wrong = _wrong_values(attribute, true, cfg.n_perturbed, world, rng)
        items.append(
            {
                "question": rng.choice(questions).format(**slots),
                "answer": answers[a_idx].format(**slots),
                "paraphrased_answer": answers[p_idx].format(**slots),
                "perturbed_answer": [answers[p_idx].format(name=profile["name"], **w) for w in wrong],
                "entity": profile["name"],
                "attribute": attribute,
            }
        )
    return items


def generate(cfg: SynthConfig) -> dict[str, list[dict]]:
    """Build every TOFU split of the synthetic benchmark (of ``cfg.family``). Deterministic for a given config."""
    if cfg.family == "inventors":
        from .synth_dev import generate_dev

        return generate_dev(cfg)
    if cfg.family == "ships":
        from .synth_ships import generate_ships

        return generate_ships(cfg)
    rng = random.Random(cfg.seed)
    names = _Names(rng)
    world = {
        "countries": [names.word(2, "ia") for _ in range(cfg.n_countries)],
        "cities": [names.word(2, rng.choice(_CITY_SUFFIX)) for _ in range(40)],
    }
    counts = forget_counts(cfg.n_authors)
    n_holdout = max(counts.values())
    authors = [_author_items(_author_profile(names, world, rng), cfg, world, rng) for _ in range(cfg.n_authors)]
    holdout = [_author_items(_author_profile(names, world, rng), cfg, world, rng) for _ in range(n_holdout)]

    # Classic titles have their own shape ("The Mirror of Kalotor") so they are not confused with debut titles.
    classic = [(names.person(), f"The {rng.choice(_NOUNS)} of {names.word(2)}") for _ in range(cfg.n_classic_authors)]
    classic_names = [n for n, _ in classic]
    real_authors = _choice_items(
        [(f'Who wrote the classic novel "{book}"?', n, n) for n, book in classic], classic_names, cfg, rng
    )
    capitals = rng.sample(world["cities"], cfg.n_countries)
    currencies = [rng.choice(_CURRENCY) for _ in world["countries"]]
    world_facts = _choice_items(
        [(f"What is the capital of {c}?", cap, c) for c, cap in zip(world["countries"], capitals)], capitals, cfg, rng
    ) + _choice_items(
        [(f"What is the currency of {c}?", cur, c) for c, cur in zip(world["countries"], currencies)],
        list(_CURRENCY),
        cfg,
        rng,
    )

    return assemble_splits(authors, holdout, counts, real_authors, world_facts)


def write_benchmark(cfg: SynthConfig, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write every split as ``OUT/<split>.jsonl`` plus ``OUT/benchmark.json`` (the config and split sizes).

    Refuses to write into a folder that already holds a different benchmark unless ``overwrite``.
    """
    out = Path(out_dir)
    meta_path = out / "benchmark.json"
    meta = {"generator": "llm_unlearn.synth", "config": asdict(cfg)}
    if meta_path.exists() and not overwrite:
        old = json.loads(meta_path.read_text())
        old_cfg = old.get("config")
        if isinstance(old_cfg, dict):
            old_cfg = {"family": "authors", **old_cfg}  # written before families existed: the authors family
        if old_cfg == meta["config"]:
            return out
        raise FileExistsError(
            f"{out} already holds a synthetic benchmark with another config ({old.get('config')}); "
            "pass --overwrite or choose another --out"
        )
    if out.exists() and any(out.glob("*.jsonl")) and not meta_path.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already holds .jsonl files that are not a synthetic benchmark; choose another --out"
        )
    from ..runs import staged_files

    splits = generate(cfg)
    # All splits appear together (benchmark.json, which marks the folder as a finished benchmark, last): an
    # interrupted write leaves the folder as it was.
    with staged_files(out, last=(meta_path.name,)) as tmp:
        for name, rows in splits.items():
            with open(tmp / f"{name}.jsonl", "w") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
        meta["splits"] = {name: len(rows) for name, rows in splits.items()}
        (tmp / meta_path.name).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _biographies(rows: list[dict], joined: bool = True) -> list:
    """One interview-style document per author: a line per attribute, the question about the author followed by
    its answer (the answers alone often omit the name), in attribute order. Utility facts are skipped."""
    docs: dict[str, list[str]] = {}
    for row in rows:
        if row.get("attribute") != "fact":
            docs.setdefault(row["entity"], []).append(f"{row['question']} {row['answer']}")
    return ["\n".join(lines) if joined else lines for lines in docs.values()]


def write_text_corpus(bench_dir: str | Path, out_dir: str | Path, forget_split: str = "forget10") -> Path:
    """A MUSE-style raw-text benchmark derived from the QA benchmark in ``bench_dir``.

    Each author becomes a biography document. ``raw/forget`` holds the forget authors', ``raw/retain1`` the other
    authors', ``raw/holdout`` the holdout authors' (never trained on); ``verbmem/forget`` cuts each forget biography
    after its first sentence (``prompt``) and keeps the rest as ``gt``; ``knowmem/forget_qa`` and
    ``knowmem/retain_qa`` are the QA pairs about forget and retain authors. Written as ``OUT/<config>/<split>.jsonl``.
    """
    from .loading import load_split
    from .schema import BenchmarkSplits

    s = BenchmarkSplits.from_forget(forget_split)
    forget = load_split(bench_dir, s.forget)
    retain = load_split(bench_dir, s.retain)
    corpus = {
        "raw/forget": [{"text": d} for d in _biographies(forget)],
        "raw/retain1": [{"text": d} for d in _biographies(retain)],
        "raw/holdout": [{"text": d} for d in _biographies(load_split(bench_dir, s.holdout))],
        "knowmem/forget_qa": [{"question": r["question"], "answer": r["answer"]} for r in forget],
        "knowmem/retain_qa": [
            {"question": r["question"], "answer": r["answer"]} for r in load_split(bench_dir, s.retain_eval)
        ],
    }
    verbmem = []
    for lines in _biographies(forget, joined=False):
        verbmem.append({"prompt": lines[0] + "\n", "gt": "\n".join(lines[1:])})
    corpus["verbmem/forget"] = verbmem
    out = Path(out_dir)
    for ref, rows in corpus.items():
        path = out / f"{ref}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"generator": "llm_unlearn.synth.text", "source": str(bench_dir), "forget_split": forget_split}
    meta["splits"] = {ref: len(rows) for ref, rows in corpus.items()}
    (out / "benchmark.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
