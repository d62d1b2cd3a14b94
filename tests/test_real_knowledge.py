"""The real-knowledge utility sets of a pretrained-model benchmark: candidates, wrong answers, the knows-it rule."""

import pytest

from llm_unlearn.data.real_knowledge import answered_correctly, candidate_facts


def test_candidates_are_tofu_rows_whose_wrong_answers_are_of_the_same_kind_and_never_right():
    sets = candidate_facts()
    assert set(sets) == {"real_authors_perturbed", "world_facts_perturbed"}
    assert len(sets["real_authors_perturbed"]) >= 40 and len(sets["world_facts_perturbed"]) >= 70
    answers_of = {}
    for rows in sets.values():
        for r in rows:
            answers_of.setdefault(r["attribute"], set()).add(r["answer"])
    for rows in sets.values():
        for r in rows:
            assert len(r["perturbed_answer"]) == 5 and r["answer"] not in r["perturbed_answer"]
            assert set(r["perturbed_answer"]) <= answers_of[r["attribute"]]
            assert r["paraphrased_answer"] == r["answer"]
    assert candidate_facts() == sets  # deterministic
    assert candidate_facts(seed=1) != sets


@pytest.mark.parametrize(
    "generation, answer, known",
    [
        ("The capital of France is Paris.", "Paris", True),
        ("It was a Parisian novel.", "Paris", False),  # whole words only
        ("The chemical symbol for gold is Au.", "Au", True),
        ("Gold, aurum, is a metal.", "Au", False),  # short answers keep their case
        ("The Nile is the longest river.", "the Nile", True),  # "the" optional
        ("Jane Eyre was written by Charlotte Brontë.", "Charlotte Bronte", True),  # accents ignored
        ("The Hobbit is by J.R.R. Tolkien.", "J. R. R. Tolkien", True),  # initials without spaces
        ("The largest planet is Neptune.", "Jupiter", False),
    ],
)
def test_a_fact_is_known_when_the_generation_holds_the_answer(generation, answer, known):
    assert answered_correctly(generation, answer) is known
