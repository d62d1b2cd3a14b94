"""Unlearning trainers end to end on a tiny model: every method through ``parse_args`` + ``run``.

One base model is fine-tuned per module (until it fits the forget set better than the held-out set) and every case of
``CASES`` unlearns its forget split once (memoised); the tests then check the weights, the forget loss, the record,
Hessian selection, gradient accumulation, the pairing, LoRA, the config layer and the input checks. Adding a method
means adding a row to ``CASES``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments

from llm_unlearn.data.formatting import QACollator, QAFormatter
from llm_unlearn.data.loading import load_split
from llm_unlearn.data.pairing import NestedCollator, PairSampler
from llm_unlearn.finetune import FinetuneConfig, finetune
from llm_unlearn.modeling import load_tokenizer
from llm_unlearn.trainers import METHODS
from llm_unlearn.trainers import losses as L
from llm_unlearn.unlearn import (
    RECORD,
    RESOLVED_CONFIG,
    build_selection,
    config_to_dict,
    forget_hash,
    load_data,
    parse_args,
    run,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FORGET, RETAIN = "forget10", "retain90"
# A base that has memorised its training QA (answer-token NLL ~0.6 on forget vs ~3 on held-out QA) so that forgetting
# is measurable. With 3 epochs the base stays near its initialisation on the forget answers (NLL ~3.6, like unseen
# QA): any update then "raises the forget loss", and SimNPO's forget term is saturated (σ(β·logp/len) ≈ 0).
BASE = dict(
    split="full",
    num_train_epochs=20,
    learning_rate=1e-2,
    per_device_train_batch_size=8,
    hidden_size=32,
    num_layers=1,
    vocab_size=400,
)
# 4 optimizer steps of 4 pairs = 2 epochs over the forget split; lr high enough for a clear effect in 4 steps.
COMMON = [
    "--max_steps",
    "4",
    "--learning_rate",
    "2e-3",
    "--per_device_train_batch_size",
    "4",
    "--logging_steps",
    "1",
    "--seed",
    "0",
]
SELECT = ["--weight_decay", "0.1", "--param_ratio", "0.05"]


@dataclass(frozen=True)
class Case:
    """One unlearning run: its flags, the method the record must name, the logged loss terms with the weights that
    make up ``loss``, and whether the forget loss must rise."""

    id: str
    flags: tuple[str, ...]
    method: str
    weights: dict  # {logged term: its weight in the total loss}
    forgets: bool = True
    selection: bool = False
    trained_fraction: float = 1.0  # at most this fraction of each weight tensor may change


F, R = "forget_loss", "retain_loss"
CASES = [
    Case("regularized_ft", ("--method", "regularized_ft"), "regularized_ft", {R: 1.0, F: 0.3}),
    Case("natural", ("--method", "natural"), "natural", {F: 1.0, R: 1.0}),
    Case("relabel", ("--method", "relabel"), "relabel", {F: 1.0, R: 1.0}),
    Case("grad_ascent", ("--method", "grad_ascent"), "grad_ascent", {F: 1.0}),
    Case("grad_diff", ("--method", "grad_diff"), "grad_diff", {F: 1.0, R: 1.0}),
    Case("npo", ("--method", "npo"), "npo", {F: 1.0, R: 1.0}),
    Case("simnpo", ("--method", "simnpo"), "simnpo", {F: 0.125, R: 1.0}),
    Case("idk_nll", ("--method", "idk_nll"), "idk_nll", {F: 1.0, R: 1.0}),
    Case("idk_dpo", ("--method", "idk_dpo"), "idk_dpo", {F: 1.0, R: 1.0}),
    Case("natural-embedding", ("--method", "natural", "--mix_space", "embedding"), "natural", {F: 1.0, R: 1.0}),
    Case("natural-context", ("--method", "natural", "--mix_space", "context"), "natural", {F: 1.0, R: 1.0}),
    Case(
        "regularized_ft-kl_uniform",
        ("--method", "regularized_ft", "--forget_regularizer", "kl_uniform"),
        "regularized_ft",
        {R: 1.0, F: 0.3},
    ),
    # Bounded: an item is pushed only while its true answer's loss is below the untouched model's loss on a wrong
    # answer to the same question.
    Case(
        "regularized_ft-bounded",
        ("--method", "regularized_ft", "--forget_regularizer", "kl_uniform", "--forget_bound", "wrong_answer"),
        "regularized_ft",
        {R: 1.0, F: 0.3},
    ),
    # Plain fine-tuning on retain (alpha_reg = 0): the naive baseline, not meant to forget, so exempt from the
    # forget-loss check (and it logs no forget term).
    Case(
        "regularized_ft-none",
        ("--method", "regularized_ft", "--forget_regularizer", "none"),
        "regularized_ft",
        {R: 1.0},
        forgets=False,
    ),
    # Only the half of each tensor that matters least to the retain answers trains: it moves the outputs little,
    # so this row takes larger steps (at 2e-3 its forget NLL rises by < 0.01).
    Case(
        "regularized_ft-retention_mask",
        ("--method", "regularized_ft", "--retention_mask_ratio", "0.5", "--learning_rate", "1e-2"),
        "regularized_ft",
        {R: 1.0, F: 0.3},
        trained_fraction=0.5,
    ),
    Case("grad_diff-kl", ("--method", "grad_diff", "--retain_loss_type", "kl"), "grad_diff", {F: 1.0, R: 1.0}),
    Case(
        "hessian",
        ("--method", "hessian", *SELECT),
        "grad_diff",
        {F: 1.0, R: 1.0},
        selection=True,
        trained_fraction=0.05,
    ),
    Case(
        "hessian-npo",
        ("--method", "hessian", "--base_method", "npo", *SELECT),
        "npo",
        {F: 1.0, R: 1.0},
        selection=True,
        trained_fraction=0.05,
    ),
]
CASE_IDS = [c.id for c in CASES]


def test_cases_cover_every_method():
    assert set(METHODS) <= {c.method for c in CASES}


# --- shared helpers --------------------------------------------------------------------------------------------------


def unlearn(base: Path, bench: Path, out: Path, *flags: str, trainer_cls=None) -> Path:
    """``parse_args`` + ``run``, as ``llm-unlearn unlearn`` does; optionally with a given trainer class."""
    cfg, cls = parse_args(
        ["--model_name_or_path", str(base), "--data", str(bench), "--output_dir", str(out), *COMMON, *flags]
    )
    return run(cfg, trainer_cls or cls)


def capturing(trainer_cls):
    """A subclass of ``trainer_cls`` that keeps every instance (to inspect the trainer that ``run`` built)."""
    captured = []

    class Capturing(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured.append(self)

    return Capturing, captured


def forget_batch(model_dir: Path, bench: Path) -> dict[str, torch.Tensor]:
    """The forget split's QA pairs (question → true answer), collated."""
    tok = load_tokenizer(model_dir)
    fmt = QAFormatter(tok, max_length=128)
    rows = load_split(str(bench), FORGET)
    return QACollator(tok.pad_token_id)([fmt.encode(r["question"], r["answer"]) for r in rows])


@torch.no_grad()
def logprobs(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return L.sequence_logprobs(logits, batch["labels"])[0]


@torch.no_grad()
def forget_nll(model, batch) -> float:
    """Mean over forget items of the mean answer-token NLL."""
    logits = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return L.nll_loss(logits, batch["labels"]).item()


def load_lm(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def step_logs(record: dict) -> list[dict]:
    return [h for h in record["log_history"] if "loss" in h]


# --- fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(small_bench, tmp_path_factory) -> Path:
    return finetune(
        FinetuneConfig(data=str(small_bench), output_dir=str(tmp_path_factory.mktemp("trainers") / "base"), **BASE)
    )


@pytest.fixture(scope="module")
def base_weights(base) -> dict[str, torch.Tensor]:
    return load_file(base / "model.safetensors")


@pytest.fixture(scope="module")
def batch(base, small_bench):
    return forget_batch(base, small_bench)


@pytest.fixture(scope="module")
def base_nll(base, batch) -> float:
    return forget_nll(load_lm(base), batch)


@pytest.fixture(scope="module")
def unlearned(base, small_bench, tmp_path_factory):
    """``unlearned(case) -> output folder``, each case run once per module."""
    root = tmp_path_factory.mktemp("unlearned")
    done: dict[str, Path] = {}

    def get(case: Case) -> Path:
        if case.id not in done:
            done[case.id] = unlearn(base, small_bench, root / case.id, *case.flags)
        return done[case.id]

    return get


def test_base_fits_forget_set_better_than_held_out(base, small_bench, batch, base_nll):
    """The premise of the forget-loss checks: the base has learned its forget split (vs. unseen holdout QA)."""
    tok = load_tokenizer(base)
    fmt = QAFormatter(tok, max_length=128)
    rows = load_split(str(small_bench), "holdout10")
    holdout = QACollator(tok.pad_token_id)([fmt.encode(r["question"], r["answer"]) for r in rows])
    assert base_nll < 0.5 * forget_nll(load_lm(base), holdout)


# --- 1. every method unlearns and records what it did ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_method_unlearns_and_records(case, unlearned, base_weights, batch, base_nll, small_bench):
    out = unlearned(case)
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == base_weights.keys()
    changed = [n for n in weights if not torch.equal(weights[n], base_weights[n])]
    assert changed, "no trainable parameter changed"
    if case.trained_fraction < 1:  # masked updates: excluded tensors are untouched, the others move partly
        for n in changed:
            assert not any(x in n for x in ("embed", "norm", "lm_head")), n
            n_changed = int((weights[n] != base_weights[n]).sum())
            assert n_changed <= math.ceil(case.trained_fraction * weights[n].numel()), n

    nll = forget_nll(load_lm(out), batch)
    if case.forgets:
        assert nll > base_nll + 0.02, f"forget NLL {base_nll:.4f} -> {nll:.4f}"

    text = (out / RECORD).read_text()
    record = json.loads(text)
    assert record["method"] == case.method
    assert record["effective_batch"] == 4 and record["global_steps"] == 4
    assert re.fullmatch(r"[0-9a-f]{64}", record["forget_sha256"])
    rows = load_split(str(small_bench), FORGET)
    assert record["forget_sha256"] == forget_hash(rows)
    for r in rows:  # the record names the forget set by hash, never by its text
        assert r["question"] not in text and r["answer"] not in text
    assert (record["selection"] is not None) == (case.selection or "--retention_mask_ratio" in case.flags)

    logs = step_logs(record)
    assert [h["step"] for h in logs] == [1, 2, 3, 4]
    for h in logs:
        assert set(case.weights) <= set(h), f"missing logged terms in {h}"
        assert (F in h) == (F in case.weights) and (R in h) == (R in case.weights)
        assert all(math.isfinite(h[k]) for k in case.weights)
        # the logged total is the weighted sum of the logged terms (terms are rounded to 5 decimals)
        assert h["loss"] == pytest.approx(sum(w * h[k] for k, w in case.weights.items()), abs=1e-4)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_saved_config_round_trips(case, unlearned):
    out = unlearned(case)
    saved = out / RESOLVED_CONFIG
    cfg, cls = parse_args(["--config", str(saved)])
    assert cls is METHODS[case.method][1] and cfg.method == case.method
    again = config_to_dict(cfg)
    recorded = json.loads((out / RECORD).read_text())["hyperparameters"]
    assert again == recorded
    own = {f.name for f in fields(type(cfg))} - {f.name for f in fields(TrainingArguments)}
    flags = dict(zip(case.flags[::2], case.flags[1::2]))
    for name in own - {"method"}:  # the method's own fields that the case set on the command line
        if f"--{name}" in flags:
            assert str(again[name]) == flags[f"--{name}"] or again[name] == type(again[name])(flags[f"--{name}"])


# --- 2. Hessian selection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.selection], ids=[c.id for c in CASES if c.selection])
def test_hessian_selection_trains_only_selected_entries(case, unlearned, base, base_weights, small_bench):
    out = unlearned(case)
    caches = sorted((base / "selection_cache").glob("hessian_*.pt"))
    assert len(caches) == 1  # both Hessian cases score the same data with the same estimator: one cache entry
    stamp = caches[0].stat().st_mtime_ns

    # the masks the run used, recomputed from the cache on a fresh copy of the base
    cfg, cls = parse_args(
        ["--model_name_or_path", str(base), "--data", str(small_bench), "--output_dir", str(out), *COMMON, *case.flags]
    )
    assert cfg.selection == "hessian" and cfg.weight_decay == 0.1
    tok = load_tokenizer(base)
    forget, retain = load_data(cfg)
    selection, _ = build_selection(cfg, load_lm(base), QAFormatter(tok, cfg.max_length), forget, retain)
    assert caches[0].stat().st_mtime_ns == stamp, "the cached scores must be reused, not recomputed"

    weights = load_file(out / "model.safetensors")
    moved = 0
    for name, before in base_weights.items():
        after = weights[name]
        mask = selection.masks.get(name)
        if mask is None or not mask.any():
            assert torch.equal(after, before), f"{name} is not selected and must be bit-identical"
            continue
        assert torch.equal(after[~mask], before[~mask]), f"unselected entries of {name} moved (weight decay?)"
        n_changed = int((after != before).sum())
        assert n_changed <= math.ceil(0.05 * before.numel())
        moved += n_changed
    assert moved > 0
    for name in base_weights:
        if any(x in name for x in ("embed", "norm", "lm_head")):
            assert not selection.masks.get(name, torch.zeros(1, dtype=torch.bool)).any()
            assert torch.equal(weights[name], base_weights[name])
    fraction = json.loads((out / RECORD).read_text())["selection"]["selected_fraction"]
    assert 0 < fraction <= 0.05 + 1e-3 and fraction == pytest.approx(selection.selected_fraction, abs=1e-5)


def test_random_selection_is_the_same_size_as_hessian_selection_elsewhere(base, base_weights, small_bench, tmp_path):
    """The control of Hessian selection: as many entries per tensor, drawn at random (seeded), trained alike."""

    def selection_of(kind: str, seed: str = "0"):
        args = ["--model_name_or_path", str(base), "--data", str(small_bench), "--output_dir", str(tmp_path / kind)]
        cfg, _ = parse_args([*args, *COMMON, "--method", "grad_diff", "--selection", kind, "--seed", seed, *SELECT])
        forget, retain = load_data(cfg)
        return build_selection(cfg, load_lm(base), QAFormatter(load_tokenizer(base), cfg.max_length), forget, retain)[
            0
        ]

    rnd, hes = selection_of("random"), selection_of("hessian")
    assert rnd.masks.keys() == hes.masks.keys()
    assert all(int(rnd.masks[n].sum()) == int(hes.masks[n].sum()) for n in rnd.masks)
    assert any(not torch.equal(rnd.masks[n], hes.masks[n]) for n in rnd.masks if hes.masks[n].any())
    again, other = selection_of("random"), selection_of("random", "1")
    assert all(torch.equal(rnd.masks[n], again.masks[n]) for n in rnd.masks)  # seeded
    assert any(not torch.equal(rnd.masks[n], other.masks[n]) for n in rnd.masks if rnd.masks[n].any())
    out = tmp_path / "trained"
    args = ["--model_name_or_path", str(base), "--data", str(small_bench), "--output_dir", str(out)]
    run(*parse_args([*args, *COMMON, "--method", "grad_diff", "--selection", "random", *SELECT]))
    weights = load_file(out / "model.safetensors")
    for name, before in base_weights.items():
        mask = rnd.masks.get(name, torch.zeros(before.shape, dtype=torch.bool))
        assert torch.equal(weights[name][~mask], before[~mask]), name
    assert json.loads((out / RECORD).read_text())["selection"]["selected_fraction"] == pytest.approx(
        hes.selected_fraction, abs=1e-6
    )


# --- 3. gradient accumulation ----------------------------------------------------------------------------------------


def test_gradient_accumulation_matches_one_large_batch(base, small_bench, tmp_path):
    """batch 1 x 8 accumulation == batch 8 x 1: the losses are means over sequences and the Trainer divides each
    micro-batch loss by the number of micro-batches actually accumulated (7 here: the forget split has 7 items)."""
    # plain SGD and no clipping: the update is lr x the accumulated gradient, so any mis-scaling shows
    flags = ["--method", "npo", "--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.1", "--max_grad_norm", "0"]
    small = unlearn(
        base,
        small_bench,
        tmp_path / "ga",
        *flags,
        "--per_device_train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "8",
    )
    large = unlearn(
        base,
        small_bench,
        tmp_path / "big",
        *flags,
        "--per_device_train_batch_size",
        "8",
        "--gradient_accumulation_steps",
        "1",
    )
    ws, wl, w0 = (load_file(p / "model.safetensors") for p in (small, large, base))
    assert max((wl[n] - w0[n]).abs().max().item() for n in w0) > 1e-3, "the step must move the weights"
    for name in w0:
        assert torch.allclose(ws[name], wl[name], atol=1e-6, rtol=0), name
    rs, rl = (json.loads((p / RECORD).read_text()) for p in (small, large))
    assert rs["effective_batch"] == rl["effective_batch"] == 8
    assert rs["train_loss"] == pytest.approx(rl["train_loss"], rel=1e-5)
    (ls,), (ll,) = step_logs(rs), step_logs(rl)
    for key in ("loss", F, R):
        assert ls[key] == pytest.approx(ll[key], abs=2e-5), key


# --- 4. pairing ------------------------------------------------------------------------------------------------------


def test_pair_sampler_is_one_global_stream_seeded_by_seed_and_epoch():
    a, again = PairSampler(7, 20, seed=3), PairSampler(7, 20, seed=3)
    epoch0 = list(a)
    assert epoch0 == list(again) == list(a)  # deterministic, and re-iterating does not advance anything
    assert len(a) == 7 and sorted(f for f, _, _ in epoch0) == list(range(7))  # one pass over the forget side
    assert all(0 <= r < 20 for _, r, _ in epoch0)
    assert list(PairSampler(7, 20, seed=4)) != epoch0
    with pytest.raises(TypeError):  # no per-rank stream any more: Accelerate shards the global one
        PairSampler(7, 20, seed=3, rank=1)

    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0 and [f for f, _, _ in epoch1] != [f for f, _, _ in epoch0]
    assert [t[1:] for t in epoch1] != [t[1:] for t in epoch0]  # new partners and draws
    resumed = PairSampler(7, 20, seed=3)
    resumed.set_epoch(1)
    assert list(resumed) == epoch1
    a.set_epoch(0)
    assert list(a) == epoch0


@pytest.mark.parametrize("n_forget, global_batch", [(10, 4), (23, 16), (7, 16), (8, 4), (5, 1)])
def test_pair_sampler_pads_the_epoch_to_whole_global_batches(n_forget, global_batch):
    sampler = PairSampler(n_forget, 20, seed=1, global_batch=global_batch)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        triples = list(sampler)
        assert len(sampler) == len(triples) == math.ceil(n_forget / global_batch) * global_batch
        order = [f for f, _, _ in triples]
        assert sorted(order[:n_forget]) == list(range(n_forget))  # the whole forget set once ...
        assert order[n_forget:] == [order[i % n_forget] for i in range(len(order) - n_forget)]  # ... then its start
        # the padding's partners and draws continue the stream: the same as an unpadded epoch's head
        plain = PairSampler(n_forget, 20, seed=1)
        plain.set_epoch(epoch)
        assert triples[:n_forget] == list(plain)
    with pytest.raises(ValueError, match="global_batch"):
        PairSampler(5, 5, seed=0, global_batch=0)


def _steps_seen(sampler, per_device: int, accumulation: int, world_size: int) -> list[list[tuple]]:
    """The triples of each optimizer step, as the Trainer's dataloader on each rank hands them out (accelerate's
    BatchSamplerShard with split_batches=False and even_batches=True, its defaults)."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    micro = [
        list(BatchSamplerShard(BatchSampler(sampler, per_device, drop_last=False), world_size, rank))
        for rank in range(world_size)
    ]
    assert len({len(m) for m in micro}) == 1 and len(micro[0]) % accumulation == 0  # no short accumulation tail
    steps = []
    for start in range(0, len(micro[0]), accumulation):
        batches = [b for m in micro for b in m[start : start + accumulation]]
        assert {len(b) for b in batches} == {per_device}  # equal micro-batches: means of means are the mean
        steps.append(sorted(t for b in batches for t in b))
    return steps


@pytest.mark.parametrize("n_forget", [23, 10, 16, 7])
def test_every_launch_layout_sees_the_same_triples_per_optimizer_step(n_forget):
    """1 process x 16, 1 x 8 x 2 accumulation, 2 processes x 8 and 4 x 2 x 2: one global batch of 16, the same
    (forget, retain, draw) triples in every optimizer step."""
    layouts = [(16, 1, 1), (8, 2, 1), (8, 1, 2), (2, 2, 4)]
    seen = {}
    for per_device, accumulation, world_size in layouts:
        sampler = PairSampler(n_forget, 5, seed=0, global_batch=per_device * accumulation * world_size)
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs.append(_steps_seen(sampler, per_device, accumulation, world_size))
        seen[per_device, accumulation, world_size] = epochs
    first, *others = seen.values()
    assert all(other == first for other in others), seen
    assert len(first[0]) == math.ceil(n_forget / 16)
    assert first[0] != first[1]  # a new epoch, new pairs


def test_pair_sampler_resumed_mid_epoch_continues_the_same_stream():
    """A resume rebuilds the sampler and skips the batches already trained on (accelerate's skip_first_batches, as
    the Trainer does): the rest of the epoch is the same triples, padding included."""
    from accelerate.data_loader import skip_first_batches
    from torch.utils.data import DataLoader

    class Keys(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, key):
            return key

    def loader(epoch):
        sampler = PairSampler(10, 20, seed=5, global_batch=4)
        sampler.set_epoch(epoch)
        return sampler, DataLoader(Keys(), sampler=sampler, batch_size=2, collate_fn=list)

    sampler, full = loader(1)
    stream = [t for batch in full for t in batch]
    assert stream == list(sampler) and len(stream) == 12
    _, again = loader(1)
    assert [t for batch in skip_first_batches(again, 3) for t in batch] == stream[6:]


def test_pair_sampler_cycles_retain_without_repeats_and_handles_no_retain():
    triples = list(PairSampler(7, 3, seed=0))
    retain = [r for _, r, _ in triples]
    assert sorted(retain[:3]) == [0, 1, 2] and sorted(retain[3:6]) == [0, 1, 2]  # full passes before any repeat
    assert [r for _, r, _ in PairSampler(5, 0, seed=0)] == [-1] * 5
    assert [r for _, r, _ in PairSampler(5, 0, seed=0, global_batch=4)] == [-1] * 8
    with pytest.raises(ValueError, match="forget side is empty"):
        PairSampler(0, 5, seed=0)


def test_trainer_batches_follow_the_pair_sampler(base, small_bench, tmp_path):
    """The Trainer's dataloader uses our sampler (no shuffle, no drop) with the global batch (3 x 2 accumulation:
    the 7 forget items padded to 12) and forwards set_epoch to it."""
    cfg, cls = parse_args(
        [
            "--method",
            "regularized_ft",
            "--model_name_or_path",
            str(base),
            "--data",
            str(small_bench),
            "--output_dir",
            str(tmp_path / "x"),
            "--per_device_train_batch_size",
            "3",
            "--gradient_accumulation_steps",
            "2",
        ]
    )
    tok = load_tokenizer(base)
    fmt = QAFormatter(tok, cfg.max_length)
    forget, retain = load_split(str(small_bench), FORGET), load_split(str(small_bench), RETAIN)
    dataset = cls.build_dataset(cfg, fmt, forget, retain)
    trainer = cls(model=load_lm(base), args=cfg, train_dataset=dataset, data_collator=NestedCollator(tok.pad_token_id))
    loader = trainer.get_train_dataloader()
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        expected = PairSampler(len(forget), len(retain), seed=cfg.seed, global_batch=6)
        expected.set_epoch(epoch)
        triples = list(expected)
        batches = list(loader)
        assert len(forget) == 7 and len(triples) == 12
        assert [len(b["forget"]["input_ids"]) for b in batches] == [3, 3, 3, 3]  # 2 full optimizer steps
        got_f = [ids for b in batches for ids in b["forget"]["input_ids"].tolist()]
        got_r = [ids for b in batches for ids in b["retain"]["input_ids"].tolist()]
        got_a = [ids for b in batches for ids in b["alt"]["input_ids"].tolist()]
        for (f, r, d), gf, gr, ga in zip(triples, got_f, got_r, got_a, strict=True):
            want_f = dataset.forget[f]["forget"]["input_ids"]
            want_a = dataset.forget[f]["alt"][d % len(dataset.forget[f]["alt"])]["input_ids"]
            assert gf[: len(want_f)] == want_f
            assert gr[: len(dataset.retain[r]["input_ids"])] == dataset.retain[r]["input_ids"]
            assert ga[: len(want_a)] == want_a


# --- 5. LoRA ---------------------------------------------------------------------------------------------------------


def test_lora_npo_reference_is_the_base_and_only_adapters_train(
    base, base_weights, batch, base_nll, small_bench, tmp_path
):
    from peft import PeftModel

    trainer_cls, captured = capturing(METHODS["npo"][1])
    out = unlearn(
        base, small_bench, tmp_path / "lora", "--method", "npo", "--use_peft", "true", trainer_cls=trainer_cls
    )
    (trainer,) = captured
    assert trainer.ref_model is None  # under LoRA the reference is the model with its adapters disabled
    base_model = load_lm(base)
    model = trainer.model.eval()
    ref = trainer.reference_logprobs(model, batch)
    assert torch.allclose(ref, logprobs(base_model, batch), atol=1e-5)
    assert (logprobs(model, batch) - ref).abs().max() > 1e-3, "the adapters must have changed the outputs"
    # only adapter weights trained: the wrapped base weights are the base's, bit for bit
    lora_names = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            lora_names.append(name)
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(p.detach(), base_weights[key]), name
        assert not p.requires_grad
    assert lora_names

    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it trained
    reloaded = PeftModel.from_pretrained(load_lm(base), out).eval()
    for name, p in reloaded.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p.detach(), base_weights[name.replace(".base_layer", "")]), name
    adapted = logprobs(reloaded, batch)
    assert torch.allclose(adapted, logprobs(model, batch), atol=1e-5)
    assert forget_nll(reloaded, batch) > base_nll
    record = json.loads((out / RECORD).read_text())
    assert record["adapter"] is True

    merged = unlearn(
        base, small_bench, tmp_path / "merged", "--method", "npo", "--use_peft", "true", "--merge_adapter", "true"
    )
    assert not (merged / "adapter_config.json").exists()
    mw = load_file(merged / "model.safetensors")
    assert mw.keys() == base_weights.keys()
    diff = [n for n in mw if not torch.equal(mw[n], base_weights[n])]
    assert diff and all(re.search(r"(q|k|v|o|gate|up|down)_proj\.weight$", n) for n in diff)
    # the same seeded run (--seed decides the adapters' initialisation): merged == adapter outputs
    assert torch.allclose(logprobs(load_lm(merged), batch), adapted, atol=1e-4)


# --- 6. config -------------------------------------------------------------------------------------------------------


def test_recipe_flags_override_and_unknown_keys(tmp_path):
    recipe = tmp_path / "npo.yaml"
    recipe.write_text("method: npo\nlearning_rate: 1.0e-3\nbeta: 0.2\nalpha: 0.5\nmax_steps: 7\n")
    cfg, cls = parse_args(["--config", str(recipe), "--learning_rate", "5e-4", "--output_dir", str(tmp_path / "o")])
    assert cls is METHODS["npo"][1] and cfg.method == "npo"
    assert cfg.learning_rate == 5e-4  # the flag wins
    assert (cfg.beta, cfg.alpha, cfg.max_steps) == (0.2, 0.5, 7)  # the recipe beats the defaults
    # --method on the command line beats the recipe's, and the recipe's keys are checked against that method
    with pytest.raises(ValueError, match=r"unknown argument\(s\) for method 'grad_diff': beta"):
        parse_args(["--config", str(recipe), "--method", "grad_diff"])
    recipe.write_text("method: npo\nlearning_rate: 1.0e-3\nalpha: 0.5\n")
    cfg, cls = parse_args(["--config", str(recipe), "--method", "grad_diff"])
    assert cls is METHODS["grad_diff"][1] and cfg.method == "grad_diff"
    assert (cfg.learning_rate, cfg.alpha) == (1e-3, 0.5)

    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grad_diff\nlearning_rate: 1.0e-3\nbeta: 0.2\nlerning_rate: 3\n")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) for method 'grad_diff': beta, lerning_rate"):
        parse_args(["--config", str(bad)])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse_args(["--config", str(tmp_path / "nope.yaml")])


def test_method_aliases_and_registry():
    cfg, cls = parse_args(["--method", "hessian"])
    assert (cfg.method, cfg.selection, cls) == ("grad_diff", "hessian", METHODS["grad_diff"][1])
    cfg, cls = parse_args(["--method", "hessian", "--base_method", "npo"])
    assert (cfg.method, cfg.selection, cls) == ("npo", "hessian", METHODS["npo"][1])
    cfg, cls = parse_args(["--method", "simnpo", "--selection", "hessian"])
    assert (cfg.method, cfg.selection, cfg.gamma, cfg.beta) == ("simnpo", "hessian", 0.125, 4.5)
    cfg, cls = parse_args([])
    assert cfg.method == "regularized_ft" and cls is METHODS["regularized_ft"][1]
    with pytest.raises(ValueError, match="--base_method only goes with --method hessian"):
        parse_args(["--method", "npo", "--base_method", "grad_diff"])
    with pytest.raises(ValueError, match="unknown method 'npx'.*hessian"):
        parse_args(["--method", "npx"])


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--method", "regularized_ft", "--forget_regularizer", "foo"], "--forget_regularizer"),
        (["--method", "regularized_ft", "--alpha_reg", "0"], "--alpha_reg"),
        (["--method", "regularized_ft", "--wrong_answer_source", "x"], "--wrong_answer_source"),
        (["--method", "regularized_ft", "--retention_mask_ratio", "1"], "--retention_mask_ratio"),
        (["--method", "regularized_ft", "--alpha_reg_schedule", "step"], "--alpha_reg_schedule"),
        (["--method", "regularized_ft", "--forget_bound", "prob"], "--forget_bound"),
        (
            ["--method", "regularized_ft", "--forget_regularizer", "none", "--forget_bound", "wrong_answer"],
            "--forget_bound",
        ),
        (["--method", "regularized_ft", "--forget_bound_margin", "nan"], "--forget_bound_margin"),
        (["--method", "grad_diff", "--param_ratio", "2"], "--param_ratio"),
        (["--method", "grad_diff", "--selection", "fisher"], "--selection"),
        (["--method", "grad_diff", "--retain_loss_type", "mse"], "--retain_loss_type"),
        (["--method", "npo", "--beta", "0"], "--beta"),
        (["--method", "natural", "--mix_space", "pixels"], "--mix_space"),
        (["--method", "natural", "--n_hybrids", "0"], "--n_hybrids"),
        (["--method", "grad_diff", "--merge_adapter", "true"], "--merge_adapter"),
        (["--method", "grad_diff", "--forget_split", "retain90"], "retain90"),
    ],
)
def test_bad_values_name_the_option(argv, option):
    with pytest.raises(ValueError, match=re.escape(option)):
        parse_args(argv)


def test_alpha_reg_schedules_decay_from_one_to_zero_over_the_run():
    from llm_unlearn.trainers.regularized import alpha_factor

    assert [alpha_factor("constant", t, 10) for t in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert [alpha_factor("linear_decay", t, 10) for t in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert [round(alpha_factor("cosine_decay", t, 10), 6) for t in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert alpha_factor("linear_decay", 3, 0) == 1.0  # the step count is not known yet: full weight


@pytest.mark.parametrize("regularizer", ["kl_uniform", "wrong_answer"])
def test_a_bound_that_stops_every_item_is_plain_fine_tuning(regularizer, unlearned, base, small_bench, tmp_path):
    # a level 100 nats per token below any wrong answer's loss: no item is ever pushed, so the run is the plain
    # fine-tuning run (same batches, zero regularizer gradient), and it logs that no item was active
    flags = ("--method", "regularized_ft", "--forget_regularizer", regularizer, "--forget_bound", "wrong_answer")
    flags += ("--forget_bound_margin", "-100")
    out = unlearn(base, small_bench, tmp_path / "stopped", *flags)
    plain = unlearned(next(c for c in CASES if c.id == "regularized_ft-none"))
    got, want = load_file(out / "model.safetensors"), load_file(plain / "model.safetensors")
    assert all(torch.allclose(got[n], want[n], atol=1e-7) for n in want)
    logs = step_logs(json.loads((out / RECORD).read_text()))
    assert [h["forget_active"] for h in logs] == [0.0] * 4 and all(h["forget_loss"] == 0.0 for h in logs)


def test_bounded_regularizer_logs_the_share_of_items_still_pushed(unlearned):
    logs = step_logs(
        json.loads((unlearned(next(c for c in CASES if c.id == "regularized_ft-bounded")) / RECORD).read_text())
    )
    # the base has memorised its forget answers (loss ~0.6) far below a wrong answer's loss: all are pushed at first
    assert logs[0]["forget_active"] == 1.0 and all(0.0 <= h["forget_active"] <= 1.0 for h in logs)
    assert all(h["forget_bound_level"] > 1.0 for h in logs)


def test_alpha_reg_zero_is_allowed_without_a_regularizer():
    cfg, _ = parse_args(["--method", "regularized_ft", "--forget_regularizer", "none", "--alpha_reg", "0"])
    assert cfg.alpha_reg == 0.0


# --- 7. bad input fails before any training --------------------------------------------------------------------------


def test_non_empty_output_dir_is_refused_and_left_alone(base, small_bench, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite_output"):
        unlearn(base, small_bench, out, "--method", "grad_ascent")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    # with --overwrite_output true the same run goes ahead
    unlearn(base, small_bench, out, "--method", "grad_ascent", "--max_steps", "1", "--overwrite_output", "true")
    assert (out / "model.safetensors").is_file() and json.loads((out / RECORD).read_text())["global_steps"] == 1


def test_forget_item_in_retain_is_refused_before_loading_a_model(small_bench, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_bench, data)
    leaked = (data / f"{FORGET}.jsonl").read_text().splitlines()[2]
    with open(data / f"{RETAIN}.jsonl", "a") as f:
        f.write(leaked + "\n")
    out = tmp_path / "out"
    # the model path does not exist: the data check must fail first
    with pytest.raises(ValueError, match=f"'{FORGET}'.*'{RETAIN}'.*must not share items"):
        unlearn(tmp_path / "no_model", data, out, "--method", "grad_diff")
    assert not out.exists() or not any(out.iterdir())


def test_hessian_scoring_samples_each_side_seeded_and_keys_the_cache_on_the_sample(
    base, small_bench, tmp_path, monkeypatch
):
    """``--hessian_samples N`` draws N examples from each side (a seeded sample, never the first N rows), ``both``
    scores N forget and N retain examples even when the forget split alone has N, and every sample has its own
    cache entry."""
    import llm_unlearn.selection as S

    seen: dict = {}
    real = S.score_parameters_cached

    def spy(model, batches, *args, **kwargs):
        seen["questions"] = [tok.decode(b["input_ids"][0], skip_special_tokens=True) for b in batches]
        return real(model, batches, *args, **kwargs)

    monkeypatch.setattr(S, "score_parameters_cached", spy)
    tok = load_tokenizer(base)

    def scored(data: str, seed: str = "0") -> tuple[list[str], set]:
        args = ["--model_name_or_path", str(base), "--data", str(small_bench), "--output_dir", str(tmp_path / "o")]
        cfg, _ = parse_args(
            [*args, *COMMON, "--method", "grad_diff", "--selection", "hessian", "--hessian_samples", "4"]
            + ["--hessian_data", data, "--seed", seed, *SELECT]
        )
        forget, retain = load_data(cfg)
        seen.clear()
        build_selection(cfg, load_lm(base), QAFormatter(tok, cfg.max_length), forget, retain)
        return seen.get("questions", []), {p.name for p in (base / "selection_cache").glob("hessian_*.pt")}

    forget, retain = load_split(str(small_bench), "forget10"), load_split(str(small_bench), "retain90")
    assert len(forget) > 4 and len(retain) > 40

    def side(questions, rows):
        return [i for i, r in enumerate(rows) if any(r["question"] in q for q in questions)]

    q_forget, files_forget = scored("forget")
    q_both, files_both = scored("both")
    q_retain, files_retain = scored("retain")
    assert len(q_forget) == 4 and len(q_both) == 8 and len(q_retain) == 4
    assert len(side(q_both, forget)) == 4 and len(side(q_both, retain)) == 4  # N from each side
    assert len(files_forget) < len(files_both) < len(files_retain)  # three samples, three cache entries
    assert max(side(q_retain, retain)) >= 4  # a sample over the split, not its first rows
    again, files_again = scored("retain")
    other, files_other = scored("retain", seed="1")
    assert again == q_retain and files_again == files_retain  # seeded: the same sample, read from its cache entry
    assert side(other, retain) != side(q_retain, retain) and len(files_other) == len(files_retain) + 1
