"""Synthetic benchmark, loading and validation."""

import json

import pytest

from llm_unlearn.data.loading import load_split
from llm_unlearn.data.schema import (
    BenchmarkSplits,
    DataValidationError,
    check_disjoint,
    tofu_split_names,
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
