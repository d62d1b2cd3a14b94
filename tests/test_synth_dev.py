"""The development benchmark family (fictitious inventors, ``SynthConfig(family="inventors")``)."""

import hashlib
import json
import re
import string
from collections import Counter, defaultdict

import pytest

from llm_unlearn.cli import main
from llm_unlearn.data import synth
from llm_unlearn.data.loading import load_split
from llm_unlearn.data.schema import (
    FORGET_PERCENTS,
    UTILITY_SPLITS,
    check_unique,
    normalize_text,
    tofu_split_names,
    validate_rows,
    validate_training_splits,
)
from llm_unlearn.data.synth import SynthConfig, generate, write_benchmark
from llm_unlearn.data.synth_dev import LEAD_INS, TEMPLATES, compose, generate_dev

N = 20  # inventors: forget01 and forget05 hold 1, forget10 holds 2
DEV = SynthConfig(family="inventors", n_authors=N, seed=0)
N_ATTRIBUTES = len(TEMPLATES)


@pytest.fixture(scope="module")
def splits():
    return generate(DEV)


def _keys(rows):
    return [(r["question"], r["answer"]) for r in rows]


def _entities(rows):
    return list(dict.fromkeys(r["entity"] for r in rows if r["attribute"] != "fact"))


def _pattern(template: str) -> re.Pattern:
    out = ""
    for literal, slot, _, _ in string.Formatter().parse(template):
        out += re.escape(literal)
        if slot is not None:
            out += f"(?P<{slot}>.+?)"
    return re.compile(out)


def _parses(attribute: str, text: str, entity: str, canonical_only: bool = False) -> list[tuple[tuple, dict]]:
    """Every composition (frame, word order, lead-in) of ``attribute`` that reads ``text`` about ``entity``, with
    the value slots it reads."""
    found = []
    for f, orders in enumerate(TEMPLATES[attribute][1]):
        for o, frame in enumerate(orders[:1] if canonical_only else orders):
            for lead in ("",) if canonical_only else LEAD_INS:
                m = _pattern(compose(lead, frame)).fullmatch(text)
                if m and m["name"] == entity:
                    slots = {k: v for k, v in m.groupdict().items() if k != "name"}
                    found.append(((f, o, lead), slots))
    return found


def _mentions(text: str, value: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE) is not None


def _facts(rows):
    facts = defaultdict(list)
    for r in rows:
        if r["attribute"] != "fact":
            facts[(r["entity"], r["attribute"])].append(r)
    return facts


def test_templates_are_the_families_own():
    assert 6 <= N_ATTRIBUTES <= 8
    author_sentences = {t for qs, answers in synth.TEMPLATES.values() for t in (*qs, *answers)}
    for questions, frames in TEMPLATES.values():
        assert len(set(questions)) == len(questions) >= 3
        assert len(frames) >= 4
        orders = [o for frame in frames for o in frame]
        assert len(set(orders)) == len(orders)
        assert not (set(questions) | set(orders)) & author_sentences


def test_every_split_with_the_nesting_of_the_author_family(splits):
    s = splits
    assert set(s) == set(tofu_split_names())
    background = s["real_authors_perturbed"] + s["world_facts_perturbed"]
    assert len(s["real_authors_perturbed"]) == DEV.n_classic_authors
    assert len(s["world_facts_perturbed"]) == 2 * DEV.n_countries
    assert len(s["full"]) == 2 * N_ATTRIBUTES * N + len(background)
    entities = _entities(s["full"])
    assert len(entities) == N
    for pct, n in (("01", 1), ("05", 1), ("10", 2)):
        forget, retain = s[f"forget{pct}"], s[f"retain{100 - int(pct):02d}"]
        assert Counter(_keys(forget) + _keys(retain)) == Counter(_keys(s["full"]))  # full = forget + retain
        assert _entities(forget) == entities[-n:]  # whole entities, the last ones
        assert len(forget) == 2 * N_ATTRIBUTES * n
        assert not set(_entities(forget)) & set(_entities(retain))
        assert all(row in retain for row in background)  # the utility sets are in every retain split
        assert s[f"forget{pct}_perturbed"] == forget
        holdout = s[f"holdout{pct}"]
        assert len(holdout) == len(forget) and not set(_entities(holdout)) & set(entities)
    assert set(_keys(s["forget01"])) <= set(_keys(s["forget05"])) <= set(_keys(s["forget10"]))
    assert _entities(s["retain_perturbed"]) == entities[:2]
    assert all(row in s["full"] for row in background)


def test_every_fact_is_trained_as_two_rows_with_two_questions_and_two_frames(splits):
    for name in (
        ["full"] + [f"forget{p}" for p in FORGET_PERCENTS] + [f"retain{100 - int(p):02d}" for p in FORGET_PERCENTS]
    ):
        facts = _facts(splits[name])
        # both rows of a fact are in the split, or neither
        assert {len(rows) for rows in facts.values()} == {2}, name
    facts = _facts(splits["full"] + splits["holdout10"])
    assert len(facts) == N_ATTRIBUTES * (N + 2)
    for (entity, attribute), (a, b) in facts.items():
        assert a["question"] != b["question"]
        frames = [{key[0] for key, _ in _parses(attribute, r["answer"], entity, canonical_only=True)} for r in (a, b)]
        assert len(frames[0]) == len(frames[1]) == 1 and frames[0] != frames[1], (entity, attribute)
        assert _parses(attribute, a["answer"], entity)[0][1] == _parses(attribute, b["answer"], entity)[0][1]


def test_paraphrase_is_a_fresh_third_frame_and_perturbed_answers_keep_its_composition(splits):
    compositions = Counter()
    rows = splits["forget10_perturbed"] + splits["retain_perturbed"] + splits["holdout10"]
    facts = _facts(rows)
    for (entity, attribute), pair in facts.items():
        trained_frames = {_parses(attribute, r["answer"], entity, canonical_only=True)[0][0][0] for r in pair}
        trained = {normalize_text(r["answer"]) for r in pair}
        for row in pair:
            para, wrong = row["paraphrased_answer"], row["perturbed_answer"]
            assert normalize_text(para) not in trained
            parses = _parses(attribute, para, entity)
            assert parses, para
            # one composition reads the paraphrase and every perturbed answer (the same words outside the value
            # slots), with other values in every slot
            ok = []
            for key, true in parses:
                pattern = _pattern(compose(key[2], TEMPLATES[attribute][1][key[0]][key[1]]))
                reads = [pattern.fullmatch(w) for w in wrong]
                if all(m and m["name"] == entity and all(m[k] != v for k, v in true.items()) for m in reads):
                    ok.append((key, true))
            assert ok, (para, wrong)
            (frame, order, lead), true = ok[0]
            assert frame not in trained_frames
            compositions[(attribute, frame, order, lead)] += 1
            assert len(wrong) == DEV.n_perturbed == len(set(wrong))
            for w in wrong:
                assert not any(_mentions(w, v) for v in true.values()), (w, true)
        assert pair[0]["paraphrased_answer"] != pair[1]["paraphrased_answer"]
    # not one fixed template: lead-ins and word orders vary
    assert len({lead for *_, lead in compositions}) > 2
    assert any(order > 0 for _, _, order, _ in compositions)


def test_utility_sets_are_single_row_choice_items(splits):
    for name in UTILITY_SPLITS:
        for row in splits[name]:
            assert row["attribute"] == "fact" and row["answer"] == row["paraphrased_answer"]
            assert len(set(row["perturbed_answer"])) == DEV.n_perturbed
            assert row["answer"] not in row["perturbed_answer"]
    assert all(r["question"].startswith("Who built the famous machine") for r in splits["real_authors_perturbed"])


def test_output_passes_the_schema_checks(splits):
    for name, rows in splits.items():
        validate_rows(rows, name, "dev")
        check_unique(rows, name, "dev")
    for pct in FORGET_PERCENTS:
        forget, retain = f"forget{pct}", f"retain{100 - int(pct):02d}"
        validate_training_splits(splits[forget], splits[retain], forget, retain, "dev")
    # the default size as well
    big = generate_dev(SynthConfig(family="inventors"))
    validate_training_splits(big["forget10"], big["retain90"], "forget10", "retain90", "dev")
    check_unique(big["full"], "full", "dev")


def test_deterministic_and_seeded(splits):
    assert generate(DEV) == splits
    assert generate_dev(SynthConfig(n_authors=N, seed=0)) == splits  # generate_dev is always the inventors
    other = generate(SynthConfig(family="inventors", n_authors=N, seed=1))
    assert set(_entities(other["full"])) != set(_entities(splits["full"]))
    authors = generate(SynthConfig(n_authors=N, seed=0))
    assert not set(_entities(authors["full"])) & set(_entities(splits["full"]))


def test_family_is_validated():
    with pytest.raises(ValueError, match="authors, inventors"):
        SynthConfig(family="poets")


def test_default_family_output_is_unchanged():
    # Regression guard only: the hash of the default embedded benchmark as generated before the family option
    # existed. If the author generator is changed on purpose, recompute it.
    digest = hashlib.sha256(json.dumps(generate(SynthConfig()), sort_keys=True).encode()).hexdigest()
    assert digest == "71403fbfc6f73cfc2525afc4ed564f5bf3cbbaa33cd4d6a1a9290b6090e46793"
    assert generate(SynthConfig(family="authors")) == generate(SynthConfig())


def test_benchmark_written_before_families_is_reused(tmp_path):
    cfg = SynthConfig(n_authors=10)
    write_benchmark(cfg, tmp_path)
    meta = json.loads((tmp_path / "benchmark.json").read_text())
    assert meta["config"]["family"] == "authors"
    del meta["config"]["family"]
    (tmp_path / "benchmark.json").write_text(json.dumps(meta))
    write_benchmark(cfg, tmp_path)  # reused, not refused as another config
    with pytest.raises(FileExistsError, match="another config"):
        write_benchmark(SynthConfig(n_authors=10, family="inventors"), tmp_path)


def test_cli_family_option(tmp_path, capsys):
    out = tmp_path / "dev"
    assert main(["data", "synth", "--out", str(out), "--family", "inventors", "--n_authors", "10"]) == 0
    assert "forget10=14" in capsys.readouterr().out
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["config"]["family"] == "inventors"
    assert load_split(out, "full") == generate(SynthConfig(family="inventors", n_authors=10))["full"]
    assert main(["data", "check", "--data", str(out)]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "a"), "--n_authors", "10"]) == 0
    assert json.loads((tmp_path / "a" / "benchmark.json").read_text())["config"]["family"] == "authors"
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path / "x"), "--family", "poets"])
