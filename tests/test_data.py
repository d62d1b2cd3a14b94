"""Synthetic benchmark, loading and validation."""

import json
from pathlib import Path

import pytest

from llm_unlearn.data.loading import load_split
from llm_unlearn.data.schema import (
    FORGET_PERCENTS,
    BenchmarkSplits,
    DataValidationError,
    check_disjoint,
    check_unique,
    normalize_text,
    tofu_split_names,
    validate_rows,
    validate_training_splits,
)
from llm_unlearn.data.synth import SynthConfig, generate, write_benchmark


def _keys(rows):
    return [(r["question"], r["answer"]) for r in rows]


def test_generator_is_deterministic_by_seed():
    assert generate(SynthConfig(n_authors=10, seed=1)) == generate(SynthConfig(n_authors=10, seed=1))
    assert generate(SynthConfig(n_authors=10, seed=1))["full"] != generate(SynthConfig(n_authors=10, seed=2))["full"]


def test_generator_has_every_tofu_split_with_consistent_contents():
    cfg = SynthConfig(n_authors=20, seed=0)
    s = generate(cfg)
    assert set(s) == set(tofu_split_names())
    full = _keys(s["full"])
    assert len(set(full)) == len(full), "items of full must be unique"
    for pct, n_authors in (("01", 1), ("05", 1), ("10", 2)):
        forget, retain = s[f"forget{pct}"], s[f"retain{100 - int(pct):02d}"]
        assert sorted(_keys(forget) + _keys(retain)) == sorted(full)  # full = forget + retain
        # forget sets are whole entities, absent from retain
        assert len({r["entity"] for r in forget}) == n_authors
        assert not {r["entity"] for r in forget} & {r["entity"] for r in retain}
        assert s[f"forget{pct}_perturbed"] == forget
        holdout = s[f"holdout{pct}"]
        assert len(holdout) == len(forget) and not set(_keys(holdout)) & set(full)
    assert set(_keys(s["forget01"])) <= set(_keys(s["forget05"])) <= set(_keys(s["forget10"]))
    assert set(_keys(s["retain_perturbed"])) <= set(_keys(s["retain90"]))


def test_items_carry_paraphrase_and_at_least_three_wrong_answers_of_the_same_form():
    s = generate(SynthConfig(n_authors=10, n_perturbed=4))
    for row in s["forget10_perturbed"] + s["world_facts_perturbed"] + s["real_authors_perturbed"]:
        assert len(row["perturbed_answer"]) == 4
        assert row["answer"] not in row["perturbed_answer"]
        assert len(set(row["perturbed_answer"])) == 4
    row = s["forget10_perturbed"][0]  # birthplace: the paraphrase's template with other values
    assert row["attribute"] == "birthplace"
    assert row["paraphrased_answer"] != row["answer"]
    shape = lambda t: sum(c.isspace() for c in t)  # noqa: E731 - same template, one-word names
    assert {shape(p) for p in row["perturbed_answer"]} == {shape(row["paraphrased_answer"])}


def test_synth_config_rejects_too_small_sizes():
    with pytest.raises(ValueError, match="n_authors"):
        SynthConfig(n_authors=5)
    with pytest.raises(ValueError, match="n_perturbed"):
        SynthConfig(n_perturbed=2)


def test_written_benchmark_loads_back_identically(tmp_path):
    cfg = SynthConfig(n_authors=10)
    write_benchmark(cfg, tmp_path)
    s = generate(cfg)
    for name in ("full", "forget10", "retain_perturbed", "world_facts_perturbed"):
        assert load_split(tmp_path, name) == s[name]
    # same config again: reused; another config: refused, and the files stay
    write_benchmark(cfg, tmp_path)
    with pytest.raises(FileExistsError, match="another config"):
        write_benchmark(SynthConfig(n_authors=11), tmp_path)
    assert load_split(tmp_path, "full") == s["full"]


def test_local_json_list_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "q1?", "answer": "a1"}, {"question": "q2?", "answer": "a2"}]
    (tmp_path / "forget10.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "retain90.parquet")
    assert load_split(tmp_path, "forget10") == rows
    assert load_split(tmp_path, "retain90") == rows


def _write(tmp_path, split, rows):
    path = tmp_path / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_field_names_file_field_and_row(tmp_path):
    good = {"question": "q?", "answer": "a", "paraphrased_answer": "a.", "perturbed_answer": ["b", "c", "d"]}
    bad = dict(good)
    del bad["paraphrased_answer"]
    path = _write(tmp_path, "forget10_perturbed", [good, good, bad])
    with pytest.raises(DataValidationError) as e:
        load_split(tmp_path, "forget10_perturbed")
    msg = str(e.value)
    assert str(path) in msg and "row 2" in msg and "paraphrased_answer" in msg


def test_wrong_types_and_empty_split(tmp_path):
    _write(tmp_path, "forget10", [{"question": "q?", "answer": 3}])
    with pytest.raises(DataValidationError, match="row 0 .*'answer' must be a string, got int"):
        load_split(tmp_path, "forget10")
    _write(
        tmp_path,
        "retain_perturbed",
        [{"question": "q", "answer": "a", "paraphrased_answer": "a", "perturbed_answer": "b"}] * 2
        + [{"question": "q", "answer": "a", "paraphrased_answer": "a", "perturbed_answer": [1]}],
    )
    with pytest.raises(DataValidationError, match="row 2 .*perturbed_answer"):
        load_split(tmp_path, "retain_perturbed")
    (tmp_path / "full.jsonl").write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        load_split(tmp_path, "full")
    (tmp_path / "retain90.jsonl").write_text('{"question": "q", "answer": "a"}\n{not json}\n')
    with pytest.raises(DataValidationError, match="line 2"):
        load_split(tmp_path, "retain90")


@pytest.mark.parametrize(
    "value, got",
    [
        ({"b": 1, "c": 2}, "dict"),
        (5, "int"),
        ([], "an empty list"),
        (["b", 3], "a list holding int at position 1"),
        (["b", " "], "a list holding an empty string at position 1"),
        ("", "an empty string"),
    ],
)
def test_perturbed_answer_is_checked_wherever_present(tmp_path, value, got):
    # forget10 does not require perturbed_answer, but one that is there must be usable
    rows = [{"question": "q0?", "answer": "a0", "perturbed_answer": ["b", "c"]}]
    rows.append({"question": "q1?", "answer": "a1", "perturbed_answer": value})
    path = _write(tmp_path, "forget10", rows)
    with pytest.raises(DataValidationError) as e:
        load_split(tmp_path, "forget10")
    assert str(e.value) == (
        f"{path}: row 1 of split 'forget10': field 'perturbed_answer' must be a non-empty list of strings, got {got}"
    )


def test_absent_or_single_string_perturbed_answer_is_accepted(tmp_path):
    rows = [
        {"question": "q0?", "answer": "a0"},
        {"question": "q1?", "answer": "a1", "perturbed_answer": None, "paraphrased_answer": None},
        {"question": "q2?", "answer": "a2", "perturbed_answer": "b"},  # one wrong answer, as a string
        {"question": "q3?", "answer": "a3", "perturbed_answer": ("b", "c")},
    ]
    validate_rows(rows, "forget10", "src")
    validate_rows([dict(r, paraphrased_answer="p") for r in rows[2:]], "retain_perturbed", "src")


@pytest.mark.parametrize("split", ["forget10", "forget10_perturbed"])
@pytest.mark.parametrize("value, end", [(3, "must be a string, got int"), (" ", "is empty")])
def test_paraphrased_answer_must_be_a_non_empty_string(tmp_path, split, value, end):
    row = {"question": "q?", "answer": "a", "paraphrased_answer": value, "perturbed_answer": ["b"]}
    path = _write(tmp_path, split, [row])
    with pytest.raises(DataValidationError) as e:
        load_split(tmp_path, split)
    assert str(e.value) == f"{path}: row 0 of split {split!r}: field 'paraphrased_answer' {end}"


def test_int_answer_in_full_names_file_field_and_row(tmp_path):
    path = _write(tmp_path, "full", [{"question": "q0?", "answer": "a"}, {"question": "q1?", "answer": 7}])
    with pytest.raises(DataValidationError) as e:
        load_split(tmp_path, "full")
    assert str(e.value) == f"{path}: row 1 of split 'full': field 'answer' must be a string, got int"


def test_normalize_text():
    assert normalize_text("  What  is\tX? ") == "what is x"
    assert normalize_text('He said "Yes."') == 'he said "yes'
    assert normalize_text("In Torport, Belia .") == "in torport, belia"
    assert normalize_text("A, b; c: d!?") == "a, b; c: d"
    assert normalize_text("“quoted”") == "“quoted"
    assert normalize_text("?") == ""


def test_exact_duplicate_rows_are_reported():
    rows = [{"question": "a?", "answer": "x"}, {"question": "b?", "answer": "y"}, {"question": "a?", "answer": "x"}]
    with pytest.raises(DataValidationError) as e:
        check_unique(rows, "forget10", "data/forget10.json")
    assert str(e.value) == (
        "data/forget10.json: rows 0 and 2 of split 'forget10' are the same item after normalization "
        "(question 'a?' / 'a?', answer 'x' / 'x'): remove the duplicates"
    )
    check_unique(rows[:2], "forget10", "data/forget10.json")
    # same question, other answer: two items
    check_unique([{"question": "a?", "answer": "x"}, {"question": "a?", "answer": "z"}], "full", "src")


def test_near_duplicate_rows_are_reported_and_counted():
    rows = [
        {"question": "Where was Kalo Mir born?", "answer": "In Torport."},
        {"question": "Who is Kalo Mir?", "answer": "A writer."},
        {"question": "where was kalo  mir born?", "answer": "in torport"},  # case, double space, final period
        {"question": "Who is Kalo Mir", "answer": "A  writer"},
    ]
    with pytest.raises(DataValidationError) as e:
        check_unique(rows, "retain90", "src")
    assert str(e.value) == (
        "src: rows 0 and 2 of split 'retain90' are the same item after normalization "
        "(question 'Where was Kalo Mir born?' / 'where was kalo  mir born?', answer 'In Torport.' / 'in torport') "
        "(1 more duplicate rows): remove the duplicates"
    )


def test_near_duplicate_across_forget_and_retain_is_reported():
    forget = [{"question": "What is X?", "answer": "A thing."}, {"question": "b?", "answer": "y"}]
    retain = [{"question": "c?", "answer": "z"}, {"question": "what is  x", "answer": "a thing"}]
    with pytest.raises(DataValidationError) as e:
        check_disjoint(forget, retain, "forget10", "retain90")
    assert str(e.value) == (
        "row 0 of 'forget10' is also row 1 of 'retain90' after normalization "
        "(question 'What is X?' / 'what is  x', answer 'A thing.' / 'a thing'): forget and retain must not share items"
    )


def test_validate_training_splits_runs_every_check_and_names_the_source():
    forget = [{"question": "a?", "answer": "x"}, {"question": "b?", "answer": "y"}]
    retain = [{"question": "c?", "answer": "z"}, {"question": "d?", "answer": "w"}]
    validate_training_splits(forget, retain, "forget10", "retain90", "data")
    with pytest.raises(DataValidationError, match=r"^data: rows 0 and 2 of split 'retain90' are the same item"):
        validate_training_splits(forget, [*retain, {"question": "C?", "answer": "z."}], "forget10", "retain90", "data")
    with pytest.raises(DataValidationError, match=r"^data: row 1 of 'forget10' is also row 0 of 'retain90'"):
        validate_training_splits(forget, [{"question": "B ?", "answer": "Y"}], "forget10", "retain90", "data")
    bad = [*forget, {"question": "e?", "answer": "v", "perturbed_answer": {"k": "v"}}]
    with pytest.raises(DataValidationError) as e:
        validate_training_splits(bad, retain, "forget10", "retain90", "data")
    assert str(e.value) == (
        "data: row 2 of split 'forget10': field 'perturbed_answer' must be a non-empty list of strings, got dict"
    )


def test_embedded_benchmark_has_no_duplicates_within_or_across_splits(small_bench):
    rows = {name: load_split(small_bench, name) for name in tofu_split_names()}
    for name, split in rows.items():
        check_unique(split, name, str(small_bench))
    for pct in FORGET_PERCENTS:
        s = BenchmarkSplits.from_forget(f"forget{pct}")
        validate_training_splits(rows[s.forget], rows[s.retain], s.forget, s.retain, str(small_bench))
        check_disjoint(rows[s.holdout], rows["full"], s.holdout, "full")


def test_scored_answers_are_every_answer_the_evaluation_scores_for_a_question():
    from llm_unlearn.data.unlearn_data import random_other_answers, scored_answers, similar_other_answers

    row = {"question": "q", "answer": "A.", "paraphrased_answer": "B", "perturbed_answer": ["C ", "d"], "entity": 1}
    assert scored_answers(row) == {"a", "b", "c", "d"}  # normalised: case, spaces, punctuation
    assert scored_answers({"question": "q", "answer": "a", "perturbed_answer": "x"}) == {"a", "x"}
    retain = [{"question": "q2", "answer": t, "entity": 2} for t in ("c", "D", "e", "f")]
    assert sorted(random_other_answers([row], retain, 8, seed=0)[0]) == ["e", "f"]  # never a perturbed answer
    assert sorted(similar_other_answers([row], retain, 8)[0]) == ["e", "f"]


def _recipes():
    root = Path(__file__).resolve().parent.parent / "configs"
    return sorted(p.name for p in root.glob("*.yaml") if p.name.startswith(("embedded_", "tuned_", "dosed_")))


@pytest.mark.parametrize("source", ["defaults", *_recipes()])
def test_no_recipe_or_default_trains_on_what_the_evaluation_scores(
    source, small_bench, tiny_model, tiny_tokenizer, tmp_path
):
    """Every method with its defaults, and every shipped recipe: the token sequences a run trains on (every side of
    every forget item, the retain items) and the (question, perturbed answer) sequences the evaluation scores are
    disjoint sets."""
    from llm_unlearn.data.formatting import QAFormatter
    from llm_unlearn.evaluation.evaluator import EvalConfig, load_eval_data
    from llm_unlearn.trainers import METHODS
    from llm_unlearn.unlearn import load_data, parse_args

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    base = ["--model_name_or_path", str(model_dir), "--data", str(small_bench), "--output_dir", str(tmp_path / "o")]
    root = Path(__file__).resolve().parent.parent / "configs"
    runs = [["--method", m] for m in METHODS] if source == "defaults" else [["--config", str(root / source)]]
    evaluated = load_eval_data(str(small_bench), EvalConfig(forget_split="forget10"))
    for extra in runs:
        cfg, trainer_cls = parse_args([*extra, *base, "--forget_split", "forget10"])
        fmt = QAFormatter(tiny_tokenizer, max_length=cfg.max_length)
        scored = {
            tuple(fmt.encode(r["question"], p)["input_ids"])
            for role in ("forget", "retain", "real_authors", "world_facts")
            for r in evaluated[role]
            for p in ([r["perturbed_answer"]] if isinstance(r["perturbed_answer"], str) else r["perturbed_answer"])
        }
        forget, retain = load_data(cfg)
        assert all(r.get("perturbed_answer") for r in forget)  # the test has something to find
        dataset = trainer_cls.build_dataset(cfg, fmt, forget, retain, tiny_model)
        trained = {tuple(e["input_ids"]) for e in dataset.retain}
        for item in dataset.forget:
            for side in item.values():
                for e in side if isinstance(side, list) else [side]:
                    trained.add(tuple(e["input_ids"]))
        assert trained and not trained & scored, (extra, len(trained & scored))


def test_missing_split_lists_what_is_there(tmp_path):
    _write(tmp_path, "full", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataValidationError, match="no file for split 'forget05'.*full.jsonl"):
        load_split(tmp_path, "forget05")


def test_overlap_between_forget_and_retain_is_reported():
    forget = [{"question": "a?", "answer": "x"}, {"question": "b?", "answer": "y"}]
    retain = [{"question": "c?", "answer": "z"}, {"question": "b?", "answer": "y"}]
    with pytest.raises(DataValidationError, match="row 1 of 'forget10' is also row 1 of 'retain90'"):
        check_disjoint(forget, retain, "forget10", "retain90")
    check_disjoint(forget, retain[:1], "forget10", "retain90")


def test_split_names_derive_from_forget_split():
    s = BenchmarkSplits.from_forget("forget05")
    assert (s.retain, s.forget_eval, s.holdout) == ("retain95", "forget05_perturbed", "holdout05")
    with pytest.raises(ValueError, match="forgetXX"):
        BenchmarkSplits.from_forget("retain90")


def test_hub_path_is_attempted_and_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataValidationError, match="config 'forget10' of Hub dataset 'locuslab/TOFU'"):
        load_split("locuslab/TOFU", "forget10")


def test_similar_other_answers_answer_the_same_kind_of_question_for_someone_else():
    from llm_unlearn.data.unlearn_data import similar_other_answers

    splits = generate(SynthConfig())
    forget, retain = splits["forget10"], splits["retain90"]
    others = similar_other_answers(forget, retain, 4)
    by_answer = {r["answer"]: r for r in retain}
    kind = {"mother": "job", "father": "job"}  # a parent's profession either way
    same_kind = 0
    for row, answers in zip(forget, others):
        assert len(answers) == 4 and row["answer"] not in answers
        picked = [by_answer[a] for a in answers]
        assert all(p["entity"] != row["entity"] for p in picked)
        want = kind.get(row["attribute"], row["attribute"])
        same_kind += all(kind.get(p["attribute"], p["attribute"]) == want for p in picked)
    assert same_kind == len(forget)  # the question template decides the neighbours
    # without entities, only the identical question is excluded
    bare = [{k: v for k, v in r.items() if k != "entity"} for r in retain[:30]]
    assert similar_other_answers([bare[0]], bare, 2)[0] != [bare[0]["answer"]] * 2
