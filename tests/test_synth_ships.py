"""The checking family (fictitious ships): TOFU schema, both phrasings trained, nothing shared with the other two."""

import pytest

from llm_unlearn.data.schema import BenchmarkSplits, check_disjoint, validate_training_splits
from llm_unlearn.data.synth import TEMPLATES as AUTHOR_TEMPLATES
from llm_unlearn.data.synth import SynthConfig, generate
from llm_unlearn.data.synth_dev import TEMPLATES as INVENTOR_TEMPLATES
from llm_unlearn.data.synth_ships import TEMPLATES


@pytest.fixture(scope="module")
def ships():
    return generate(SynthConfig(family="ships", n_authors=20, seed=1))


def test_ships_are_deterministic_and_differ_by_seed(ships):
    assert generate(SynthConfig(family="ships", n_authors=20, seed=1)) == ships
    assert generate(SynthConfig(family="ships", n_authors=20, seed=2))["full"] != ships["full"]


def test_every_setting_validates_and_holdout_ships_were_never_trained(ships):
    for pct in ("01", "05", "10"):
        s = BenchmarkSplits.from_forget(f"forget{pct}")
        validate_training_splits(ships[s.forget], ships[s.retain], s.forget, s.retain, "ships")
        check_disjoint(ships[s.holdout], ships["full"], s.holdout, "full")
        assert len(ships[s.forget]) + len(ships[s.retain]) == len(ships["full"])


def test_both_phrasings_of_every_fact_are_trained_and_the_paraphrase_is_the_other(ships):
    rows = ships["forget10"]
    by_fact: dict = {}
    for r in rows:
        by_fact.setdefault((r["entity"], r["attribute"]), []).append(r)
        assert len(r["perturbed_answer"]) == 5 and r["answer"] not in r["perturbed_answer"]
        assert r["paraphrased_answer"] not in r["perturbed_answer"]
    for pair in by_fact.values():
        a, b = pair
        assert a["question"] != b["question"] and a["answer"] != b["answer"]
        assert (a["paraphrased_answer"], b["paraphrased_answer"]) == (b["answer"], a["answer"])
    assert {attribute for _, attribute in by_fact} == set(TEMPLATES)


def test_no_template_is_shared_with_the_other_families():
    def sentences(templates):
        return {t for questions, answers in templates.values() for t in (*questions, *_flat(answers))}

    ours = sentences(TEMPLATES)
    assert not ours & sentences(AUTHOR_TEMPLATES) and not ours & sentences(INVENTOR_TEMPLATES)


def _flat(answers):
    return [a if isinstance(a, str) else a[0] for a in answers]


def test_the_checking_family_is_never_tuned_on():
    from llm_unlearn.tune import TuneConfig

    with pytest.raises(ValueError, match="--family ships is the checking benchmark"):
        TuneConfig(method="npo", family="ships")
