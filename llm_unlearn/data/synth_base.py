"""What the three synthetic benchmark families share: the config, the name drawer, wrong values, the utility items
and how entity items become TOFU splits. Each family (:mod:`.synth` authors, :mod:`.synth_dev` inventors,
:mod:`.synth_ships` ships) imports from here; :func:`llm_unlearn.data.synth.generate` picks the family."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from .schema import FORGET_PERCENTS

_SYLLABLES = (
    "ka lo mir ven dra sel tor ni bel quin zar mon ris tal gor lin fen dor ash wyn "
    "cal ope ru sta vik hel mar jo ber tis ul ana eth gri pol sa de fa ron"
).split()


@dataclass
class SynthConfig:
    """Sizes and seed of the synthetic benchmark.

    Attributes:
        n_authors: fictitious authors in ``full`` (default 60). Forget sets take the last 1/5/10 % of them
            (at least one author each).
        n_perturbed: wrong answers per item (default 5, as TOFU).
        n_classic_authors: items of the "real authors" utility set (default 20).
        n_countries: countries of the fictitious world; each gives two "world facts" items (default 12).
        seed: everything is a deterministic function of it (default 0).
        family: ``authors`` (default: the fictitious authors results are reported on) or ``inventors`` (the
            development family of :mod:`llm_unlearn.data.synth_dev`, for tuning recipes only: there
            ``n_authors`` counts inventors, ``n_classic_authors`` classic inventors and ``n_countries`` regions).
    """

    FAMILIES: ClassVar[tuple[str, ...]] = ("authors", "inventors", "ships")

    n_authors: int = 60
    n_perturbed: int = 5
    n_classic_authors: int = 20
    n_countries: int = 12
    seed: int = 0
    family: str = "authors"

    def __post_init__(self):
        if self.family not in self.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(self.FAMILIES)}, got {self.family!r}")
        if self.n_authors < 10:
            raise ValueError(f"n_authors must be at least 10 (one author per 10 %), got {self.n_authors}")
        if self.n_perturbed < 3:
            raise ValueError(f"n_perturbed must be at least 3, got {self.n_perturbed}")
        if self.n_classic_authors < self.n_perturbed + 1 or self.n_countries < self.n_perturbed + 1:
            raise ValueError(
                "n_classic_authors and n_countries must exceed n_perturbed (wrong answers come from them)"
            )


class _Names:
    """Unique pronounceable names drawn from syllables."""

    def __init__(self, rng: random.Random, syllables: tuple[str, ...] = _SYLLABLES):
        self.rng, self.syllables = rng, syllables
        self.used: set[str] = set()

    def word(self, n_syllables: int, suffix: str = "") -> str:
        for _ in range(10_000):
            w = ("".join(self.rng.choice(self.syllables) for _ in range(n_syllables)) + suffix).capitalize()
            if w not in self.used:
                self.used.add(w)
                return w
        raise RuntimeError("ran out of unique names; lower the benchmark size")

    def person(self) -> str:
        return f"{self.word(2)} {self.word(self.rng.choice((2, 3)))}"


def wrong_values(sample, true: dict, k: int, world: dict, rng: random.Random) -> list[dict]:
    """k distinct values drawn by ``sample(rng, world)``, each different from the true one in every slot."""
    out: list[dict] = []
    for _ in range(10_000):
        v = sample(rng, world)
        if all(v[s] != true[s] for s in true) and v not in out:
            out.append(v)
            if len(out) == k:
                return out
    raise RuntimeError(f"could not draw {k} wrong values of the kind {sorted(true)}")


def _choice_items(facts: list[tuple[str, str, str]], pool: list[str], cfg: SynthConfig, rng) -> list[dict]:
    """Items whose answer is one value from ``pool``; wrong answers are other pool values."""
    items = []
    for question, value, entity in facts:
        wrong = rng.sample([p for p in pool if p != value], cfg.n_perturbed)
        items.append(
            {
                "question": question,
                "answer": value,
                "paraphrased_answer": value,
                "perturbed_answer": wrong,
                "entity": entity,
                "attribute": "fact",
            }
        )
    return items


def forget_counts(n_entities: int) -> dict[str, int]:
    """Entities in each forget split: the last 1/5/10 % (at least one each)."""
    return {pct: max(1, round(n_entities * int(pct) / 100)) for pct in FORGET_PERCENTS}


def assemble_splits(
    entities: list[list[dict]],
    holdout: list[list[dict]],
    counts: dict[str, int],
    real_facts: list[dict],
    world_facts: list[dict],
) -> dict[str, list[dict]]:
    """Every TOFU split from per-entity item lists (forget sets = the last entities, nested), never-trained holdout
    entities and the two utility sets, which belong to ``full`` and to every retain split. Shared by both families."""

    def flat(groups):
        return [item for g in groups for item in g]

    background = real_facts + world_facts
    splits = {"full": flat(entities) + background}
    for pct, n in counts.items():
        splits[f"forget{pct}"] = flat(entities[-n:])
        splits[f"retain{100 - int(pct):02d}"] = flat(entities[:-n]) + background
        splits[f"forget{pct}_perturbed"] = flat(entities[-n:])
        splits[f"holdout{pct}"] = flat(holdout[:n])
    splits["retain_perturbed"] = flat(entities[: counts["10"]])
    splits["real_authors_perturbed"] = real_facts
    splits["world_facts_perturbed"] = world_facts
    return splits
