"""``llm-unlearn attack``: relearning, quantization and rephrasing on tiny models, and their place in the report and
the model card."""

import json
import math

import pytest

from llm_unlearn.robustness import attacks as A
from llm_unlearn.robustness.run import AttackConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(num_train_epochs=20, hidden_size=64, num_layers=1, vocab_size=400, per_device_train_batch_size=16)
EVAL = ["--batch_size", "32", "--max_new_tokens", "12"]


@pytest.fixture(scope="module")
def trio(small_bench, tmp_path_factory):
    """(target trained on full, reference trained on retain90, a grad_ascent run unlearned from the target)."""
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.stages import unlearn

    root = tmp_path_factory.mktemp("attack")
    data = str(small_bench)
    target = finetune(FinetuneConfig(data=data, output_dir=str(root / "target"), split="full", **TINY))
    ref = finetune(FinetuneConfig(data=data, output_dir=str(root / "ref"), split="retain90", **TINY))
    run = unlearn(
        [
            "--method", "grad_ascent", "--model_name_or_path", str(target), "--data", data,
            "--output_dir", str(root / "run"), "--max_steps", "6", "--learning_rate", "2e-3",
            "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    return target, ref, run


@pytest.fixture(scope="module")
def attacked(trio, small_bench):
    """The CLI on the run: relearning, 16-bit (control) and 4-bit weights, rephrase probes."""
    from llm_unlearn.cli import main

    _, ref, run = trio
    argv = ["attack", str(run), "--reference", str(ref), "--data", str(small_bench), "--quantize_bits", "16,4"]
    assert main([*argv, "--relearn_steps", "8", *EVAL]) == 0
    return json.loads((run / "eval_forget10.json").read_text()), argv


def test_recovery_and_share_on_hand_made_numbers():
    assert A.recovery(0.1, 0.5, 0.9) == (pytest.approx(0.5), None)
    assert A.recovery(0.1, 0.1, 0.9)[0] == 0
    value, why = A.recovery(0.5, 0.9, 0.51)
    assert value is None and "nothing to recover" in why
    # A model that removed 4 % of the target − reference gap (0.94 vs 0.97, reference 0.28) has nothing to recover:
    # without the reference the ratio over its 0.03 reads as a -467 % "recovery".
    assert A.recovery(0.94, 0.80, 0.97)[0] == pytest.approx(-14 / 3)
    value, why = A.recovery(0.94, 0.80, 0.97, reference=0.28)
    assert value is None and "removed only 4 %" in why
    assert A.recovery(0.30, 0.60, 0.97, reference=0.28)[0] == pytest.approx(0.3 / 0.67)
    rec = A.recoveries({"probability": 0.2, "rouge_l_recall": 0.5}, {"probability": 0.6, "rouge_l_recall": 0.5},
                       {"probability": 1.0, "rouge_l_recall": 0.505})  # fmt: skip
    assert rec["probability"] == pytest.approx(0.5) and rec["rouge_l_recall"] is None and rec["rouge_l_recall_note"]
    share = A.knowledge_share({"probability": 0.5, "rouge_l_recall": 0.3}, {"probability": 0.9, "rouge_l_recall": 0.3},
                              {"probability": 0.1, "rouge_l_recall": 0.3})  # fmt: skip
    assert share["probability"] == pytest.approx(0.5) and share["rouge_l_recall"] is None


def test_reading_tells_not_removed_from_hidden_from_removed():
    from llm_unlearn.robustness.run import reading

    def share(x):
        return {"probability": x}

    assert reading(share(0.9), share(0.95))[0] == "not removed"  # never taken away: no attack was needed
    kind, text = reading(share(0.05), share(0.74))
    assert kind == "hidden" and "74 %" in text and "from 5 %" in text
    assert reading(share(0.05), share(0.10))[0] == "removed"
    assert reading(share(-0.3), share(0.2))[0] == "removed"
    assert reading(share(0.05), share(None))[0] == "unclear"


def test_relearning_split_keeps_part_of_every_entity_untouched(small_bench):
    from llm_unlearn.data.loading import load_split

    train, evaluation = load_split(str(small_bench), "forget10"), load_split(str(small_bench), "forget10_perturbed")
    chosen, rest = A.split_for_relearning(train, evaluation, 0.25, seed=0)
    assert {r["question"] for r in chosen}.isdisjoint(r["question"] for r in rest)
    assert len(chosen) + len(rest) == len(evaluation)
    for entity in {r["entity"] for r in train}:
        n = sum(r["entity"] == entity for r in train)
        assert sum(r["entity"] == entity for r in chosen) == max(1, round(0.25 * n))
        assert any(r["entity"] == entity for r in rest)
    assert A.split_for_relearning(train, evaluation, 0.25, seed=0)[0] == chosen  # seeded
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        A.split_for_relearning(train, evaluation, 1.0, seed=0)


def test_related_rows_are_other_entities_that_share_a_value(small_bench):
    from llm_unlearn.data.loading import load_split

    forget, retain = load_split(str(small_bench), "forget10"), load_split(str(small_bench), "retain90")
    related = A.related_rows(forget, retain)
    forget_entities = {r["entity"] for r in forget}
    assert related and not {r["entity"] for r in related} & forget_entities
    from llm_unlearn.data.synth import _GENRES

    def genre(row):
        return next(g for g in _GENRES if g in row["answer"])

    forget_genres = {genre(r) for r in forget if r["attribute"] == "genre"}
    same_genre = {r["entity"] for r in retain if r["attribute"] == "genre" and genre(r) in forget_genres}
    assert same_genre <= {r["entity"] for r in related}  # an author of the same genre is related
    assert A.value_words(forget[0]) and not A.value_words(forget[0]) & {"the", "in", "of"}
    assert A.related_rows([{"question": "q", "answer": "a"}], retain) == []  # no entity fields: none


def test_relearning_raises_forget_probability_of_a_model_that_never_saw_it(trio, small_bench, tmp_path):
    from llm_unlearn.data.formatting import QAFormatter
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.modeling import load_causal_lm, load_tokenizer

    _, ref, _ = trio
    cfg = EvalConfig(batch_size=32, max_new_tokens=12)
    rows = load_split(str(small_bench), "forget10_perturbed")
    tok = load_tokenizer(ref)
    formatter = QAFormatter(tok, max_length=cfg.max_length)
    before = A.summarize(A.evaluate_rows(load_causal_lm(ref), formatter, rows, cfg))
    settings = dict(steps=10, learning_rate=2e-3, batch_size=4, lora=False, lora_r=8, seed=0, max_length=256)
    model = A.relearn(load_causal_lm(ref), tok, load_split(str(small_bench), "forget10"), settings, str(tmp_path))
    after = A.summarize(A.evaluate_rows(model, formatter, rows, cfg))
    assert after["probability"] > 2 * before["probability"]


def test_quantization_rounds_linear_weights_to_the_grid_and_16_bits_is_a_no_op(tiny_model):
    import copy

    import torch

    original = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert A.quantize_weights(copy.deepcopy(tiny_model), 16).state_dict().keys() == original.keys()
    for k, v in A.quantize_weights(copy.deepcopy(tiny_model), 16).state_dict().items():
        assert torch.equal(v, original[k])
    for bits, levels in ((8, 256), (4, 16)):
        q = A.quantize_weights(copy.deepcopy(tiny_model), bits).state_dict()
        w = q["model.layers.0.mlp.down_proj.weight"]
        assert not torch.equal(w, original["model.layers.0.mlp.down_proj.weight"])
        assert max(row.unique().numel() for row in w) <= levels  # hidden 32: one group per row
        assert torch.equal(q["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
        assert torch.equal(q["lm_head.weight"], original["lm_head.weight"])
    with pytest.raises(ValueError, match="bits must be one of"):
        A.quantize_weights(tiny_model, 3)


def test_rephrase_probes_ask_the_right_questions(small_bench, tiny_tokenizer, tmp_path):
    from llm_unlearn.data.formatting import QAFormatter
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.data.synth import TEMPLATES

    rows = load_split(str(small_bench), "forget10_perturbed")
    row = rows[0]
    variants = A.question_variants(row)
    expected = {q.format(name=row["entity"]) for q in TEMPLATES[row["attribute"]][0]} - {row["question"]}
    assert set(variants) == expected and len(variants) == len(TEMPLATES[row["attribute"]][0]) - 1
    assert A.question_variants({**row, "question": "Something else?"}) == []
    shots = load_split(str(small_bench), "retain_perturbed")[:2]
    (tmp_path / "t.txt").write_text("# a comment\nPlease answer briefly: {question}\n")
    templates = A.read_templates((tmp_path / "t.txt").read_text(), "t.txt")
    probes = A.rephrase_probes(rows, shots, templates)
    assert [q for _, q in probes["exact"]["questions"]] == [r["question"] for r in rows]
    assert len(probes["paraphrased"]["questions"]) == sum(len(A.question_variants(r)) for r in rows)
    assert all(q != rows[i]["question"] and rows[i]["entity"] in q for i, q in probes["paraphrased"]["questions"])
    assert probes["template_0"]["questions"][0][1] == f"Please answer briefly: {row['question']}"
    prompt = QAFormatter(tiny_tokenizer, shots=probes["few_shot"]["shots"]).prompt_text(row["question"])
    assert prompt == (
        f"Question: {shots[0]['question']}\nAnswer: {shots[0]['answer']}\n\n"
        f"Question: {shots[1]['question']}\nAnswer: {shots[1]['answer']}\n\nQuestion: {row['question']}\nAnswer:"
    )
    with pytest.raises(ValueError, match="line 1: template 'no slot' has no"):
        A.read_templates("no slot", "t.txt")


def test_attack_settings_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="choose from relearn, quantize, rephrase"):
        AttackConfig(attacks="relearn,forgetting")
    with pytest.raises(ValueError, match="each must be one of 16, 8, 4, 2"):
        AttackConfig(quantize_bits="8,3")
    with pytest.raises(ValueError, match="relearn_source must be one of"):
        AttackConfig(relearn_source="everything")
    with pytest.raises(FileNotFoundError, match="no such file"):
        AttackConfig(rephrase_templates=str(tmp_path / "missing.txt"))


def test_attack_joins_the_evaluation_and_the_report(attacked, trio):
    result, _ = attacked
    target, ref, run = trio
    rob = result["robustness"]
    assert rob["target"] == str(target) and rob["reference"] == str(ref)
    relearn = rob["relearn"]["forget"]
    assert relearn["relearn_items"] + relearn["eval_items"] == len(result["splits"]["forget"]["items"])
    # relearning on part of the forget split raises the forget probability of the rest, for the model and the
    # reference alike; the reference is measured against itself before the attack
    assert relearn["model"]["after"]["probability"] > relearn["model"]["before"]["probability"]
    assert relearn["reference"]["before"]["forget_quality"] == 1.0
    gap = relearn["target"]["probability"] - relearn["model"]["before"]["probability"]
    expected = (relearn["model"]["after"]["probability"] - relearn["model"]["before"]["probability"]) / gap
    assert relearn["recovery"]["probability"] == pytest.approx(expected)
    control = rob["quantize"]["16"]
    for who in ("model", "reference"):
        for m in ("probability", "rouge_l_recall", "forget_quality"):
            assert math.isclose(control[who]["after"][m], control[who]["before"][m], abs_tol=1e-6)
    assert control["recovery"]["probability"] == pytest.approx(0, abs=1e-6)
    assert (
        rob["quantize"]["4"]["model"]["after"]["probability"] != rob["quantize"]["4"]["model"]["before"]["probability"]
    )
    probes = rob["rephrase"]["probes"]
    assert set(probes) == {"exact", "paraphrased", "few_shot"}
    exact = probes["exact"]["model"]
    assert exact["probability"] == pytest.approx(result["summary"]["forget/probability"], abs=1e-6)
    assert probes["paraphrased"]["model"]["n_questions"] == 2 * exact["n_questions"]
    md = (run / "eval_forget10.md").read_text()
    assert "## Is it really gone?" in md and "| relearn (forget) |" in md and "| 4-bit weights |" in md
    assert "| few_shot |" in md


def test_attack_results_are_cached_and_reach_the_model_card(attacked, trio, small_bench):
    from llm_unlearn.cli import main
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.hub import model_card

    result, argv = attacked
    _, ref, run = trio
    caches = sorted((run / "attack_cache").iterdir()) + sorted((ref / "attack_cache").iterdir())
    stamps = [p.stat().st_mtime_ns for p in caches]
    assert main([*argv, "--relearn_steps", "8", *EVAL]) == 0
    assert [p.stat().st_mtime_ns for p in caches] == stamps, "a second attack must reuse every cached result"
    assert sorted((run / "attack_cache").iterdir()) + sorted((ref / "attack_cache").iterdir()) == caches
    card = model_card(run, result)
    assert "Is it really gone?" in card and "| relearn (forget) |" in card
    for row in load_split(str(small_bench), "forget10"):
        assert row["question"] not in card


def test_attack_refuses_a_reference_json_before_any_work(trio, small_bench):
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.robustness.run import run_attacks

    _, _, run = trio
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(FileNotFoundError, match="need the reference's model folder"):
        run_attacks(str(run), [str(run / "eval_forget10.json")], str(small_bench), AttackConfig(), EvalConfig())
    assert sorted(p.name for p in run.iterdir()) == before
