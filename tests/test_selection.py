"""Hessian-selected parameter unlearning: scores, masks, the masked update and the cache (llm_unlearn.selection)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llm_unlearn.selection import (
    ParameterSelection,
    cache_key,
    double_backward_attention,
    forward_backward_seconds,
    hutchinson_diagonal,
    match_parameter_names,
    retention_masks,
    score_parameters,
    score_parameters_cached,
    select_masks,
    top_modules,
)
from llm_unlearn.trainers.losses import nll_loss

VOCAB, T = 64, 8


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config)


def make_batches(n: int = 3, batch_size: int = 2, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (batch_size, T), generator=gen)
        labels = ids.clone()
        labels[:, : T // 2] = -100  # the "prompt"
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


def manual_grads(model, batches) -> list[dict[str, torch.Tensor]]:
    """Per-microbatch gradients of the answer NLL, by a plain ``loss.backward()`` loop."""
    out = []
    for b in batches:
        model.zero_grad()
        nll_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    return out


@pytest.fixture
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def batches():
    return make_batches()


# ----------------------------------------------------------------------------------------------------- scores


def test_fisher_equals_sum_of_squared_microbatch_gradients(model, batches):
    scores = score_parameters(model, batches, "fisher")
    grads = manual_grads(model, batches)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(scores) == trainable
    for name in trainable:
        expected = sum(g[name].square() for g in grads)
        assert scores[name].dtype == torch.float32 and scores[name].device.type == "cpu"
        torch.testing.assert_close(scores[name], expected, rtol=1e-5, atol=1e-12)
    assert scores.estimator == "fisher" and scores.microbatches == 3 and scores.seconds > 0
    assert all(p.grad is None for p in model.parameters())  # scoring leaves .grad alone


def test_only_trainable_parameters_are_scored(model, batches):
    model.model.embed_tokens.weight.requires_grad_(False)
    scores = score_parameters(model, batches[:1], "fisher")
    assert "model.embed_tokens.weight" not in scores and "lm_head.weight" in scores


def test_ggn_is_nonnegative_nonzero_seeded_and_leaves_global_rng(model, batches):
    state = torch.get_rng_state()
    a = score_parameters(model, batches, "ggn", seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    b = score_parameters(model, batches, "ggn", seed=0)
    c = score_parameters(model, batches, "ggn", seed=1)
    for name, s in a.items():
        assert (s >= 0).all(), name
        assert s.sum() > 0, name
        assert torch.equal(s, b[name])
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # Sampled labels differ from the true ones: GGN is not the empirical Fisher.
    fisher = score_parameters(model, batches, "fisher")
    assert not torch.allclose(a["lm_head.weight"], fisher["lm_head.weight"])


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # L = Σ c θ²/2 + Σ θ⁴: H = diag(c + 12 θ²), and z_i² = 1 makes every single probe exact.
    theta = torch.randn(7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    c = torch.arange(1.0, 8.0)
    (est,) = hutchinson_diagonal(lambda: (c * theta**2).sum() / 2 + (theta**4).sum(), [theta], probes=1)
    torch.testing.assert_close(est, c + 12 * theta.detach() ** 2)


def test_hutchinson_converges_to_exact_diagonal():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 2, generator=gen), torch.randn(16, generator=gen)
    w1 = torch.randn(3, 2, generator=gen, requires_grad=True)
    w2 = torch.randn(3, generator=gen, requires_grad=True)

    def loss_of(a, b):
        return ((torch.tanh(x @ a.T) @ b - y) ** 2).mean()

    def flat_loss(v):
        return loss_of(v[:6].view(3, 2), v[6:])

    hess = torch.autograd.functional.hessian(flat_loss, torch.cat([w1.detach().reshape(-1), w2.detach()]))
    exact = hess.diagonal()
    probes = 2000
    est = torch.cat([e.reshape(-1) for e in hutchinson_diagonal(lambda: loss_of(w1, w2), [w1, w2], probes=probes)])
    # Var[z_i (Hz)_i] = Σ_{j≠i} H_ij²: allow 4 standard errors.
    std = ((hess.square().sum(1) - exact.square()) / probes).sqrt()
    assert (est - exact).abs().le(4 * std + 1e-6).all(), (est, exact, std)
    assert (hess - torch.diag(exact)).abs().max() > 0.05  # the off-diagonal part is not trivial


def test_hutchinson_on_tiny_llama_matches_exact_diagonal_and_restores_attention(model, batches):
    assert model.config._attn_implementation == "sdpa"
    # Score only the final norm (16 entries) so that the exact Hessian is cheap.
    for name, p in model.named_parameters():
        p.requires_grad_(name == "model.norm.weight")
    scores = score_parameters(model, batches, "hutchinson", probes=600, seed=0)
    assert model.config._attn_implementation == "sdpa"
    assert list(scores) == ["model.norm.weight"] and scores.probes == 600

    w0 = model.model.norm.weight.detach().clone()

    def total_loss(w):
        out = 0.0
        for b in batches:
            inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
            logits = torch.func.functional_call(model, {"model.norm.weight": w}, args=(), kwargs=inputs).logits
            out = out + nll_loss(logits, b["labels"])
        return out

    with double_backward_attention(model):
        assert model.config._attn_implementation == "eager"
        hess = torch.autograd.functional.hessian(total_loss, w0)
    assert model.config._attn_implementation == "sdpa"
    exact = hess.diagonal()
    # Per microbatch the estimate has variance Σ_{j≠i} (H_b)_ij² / K; bound with the summed Hessian (loose).
    std = ((hess.square().sum(1) - exact.square()) * len(batches) / 600).sqrt()
    err = (scores["model.norm.weight"] - exact).abs()
    assert err.le(5 * std + 1e-4 * exact.abs().max()).all(), (err, std)


def test_hutchinson_runs_on_all_parameters_of_tiny_llama(model, batches):
    state = torch.get_rng_state()
    scores = score_parameters(model, batches[:1], "hutchinson", probes=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.config._attn_implementation == "sdpa"
    assert set(scores) == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert scores["model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0  # second order reaches attention
    # Scoring happens in eval mode and restores the training flag.
    model.train()
    score_parameters(model, batches[:1], "fisher")
    assert model.training


def test_forward_backward_seconds_is_positive(model, batches):
    seconds = forward_backward_seconds(model, batches)
    assert isinstance(seconds, float) and seconds > 0
    assert all(p.grad is None for p in model.parameters())


def test_unknown_estimator_is_rejected(model, batches):
    with pytest.raises(ValueError, match="estimator"):
        score_parameters(model, batches, "diag")


# ----------------------------------------------------------------------------------------------------- masks


def random_scores(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": (10, 4),
        "model.layers.0.mlp.up_proj.weight": (10, 10),
        "model.layers.0.self_attn.q_proj.weight": (4, 7),
        "model.layers.0.input_layernorm.weight": (4,),
        "lm_head.weight": (10, 4),
    }
    return {n: torch.rand(s, generator=gen) * (i + 1) for i, (n, s) in enumerate(shapes.items())}


def test_select_masks_per_module_takes_the_top_ceil_ratio_entries_of_each_tensor():
    scores = random_scores()
    masks = select_masks(scores, ratio=0.05)
    assert set(masks) == set(scores)
    for name in ("model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "lm_head.weight"):
        assert masks[name].dtype == torch.bool and not masks[name].any()
    up = "model.layers.0.mlp.up_proj.weight"
    assert int(masks[up].sum()) == 5  # ceil(0.05 * 100), not ceil(5.000000000000001)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert int(masks[q].sum()) == 2  # ceil(0.05 * 28) = ceil(1.4)
    for name in (up, q):
        m, s = masks[name], scores[name]
        assert m.shape == s.shape
        assert s[m].min() > s[~m].max()
        assert torch.equal(torch.sort(s[m]).values, torch.sort(s.flatten()).values[-int(m.sum()) :])
    # At least one entry, even when ratio · numel < 1; ties still give exactly k.
    tiny = select_masks({"a.weight": torch.ones(3, 3)}, ratio=0.01, exclude=())
    assert int(tiny["a.weight"].sum()) == 1
    ties = select_masks({"a.weight": torch.ones(10, 10)}, ratio=0.25, exclude=())
    assert int(ties["a.weight"].sum()) == 25


def test_select_masks_global_takes_the_globally_largest():
    scores = random_scores()
    masks = select_masks(scores, ratio=0.1, granularity="global")
    eligible = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    assert sum(int(masks[n].sum()) for n in eligible) == math.ceil(0.1 * 128)  # 13 of 100 + 28
    chosen = torch.cat([scores[n][masks[n]] for n in eligible])
    rest = torch.cat([scores[n][~masks[n]] for n in eligible])
    assert chosen.min() > rest.max()
    assert not any(masks[n].any() for n in scores if n not in eligible)
    # lm_head has the largest scores, but it is excluded; with exclude=() it takes everything of the top 10%.
    every = select_masks(scores, ratio=0.1, granularity="global", exclude=())
    assert int(every["lm_head.weight"].sum()) > 0
    assert sum(int(m.sum()) for m in every.values()) == math.ceil(0.1 * (40 + 100 + 28 + 4 + 40))


def test_select_masks_validates_arguments():
    with pytest.raises(ValueError):
        select_masks(random_scores(), ratio=0.0)
    with pytest.raises(ValueError):
        select_masks(random_scores(), ratio=0.1, granularity="per_row")
    # A comma-separated exclude string works like the tuple.
    assert not select_masks(random_scores(), 0.5, exclude="mlp,q_proj")["model.layers.0.mlp.up_proj.weight"].any()


def test_retention_masks_select_the_smallest_retain_gradients(model, batches):
    masks = retention_masks(model, batches, ratio=0.2)
    grads = manual_grads(model, batches)
    for name, m in masks.items():
        if any(f in name for f in ("embed", "lm_head", "norm")):
            assert not m.any(), name
            continue
        saliency = sum(g[name].abs() for g in grads)
        assert int(m.sum()) == math.ceil(0.2 * m.numel()), name
        assert saliency[m].max() <= saliency[~m].min(), name


# ------------------------------------------------------------------------------------------- masked update


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_only_selected_moved(model, before, masks):
    after = dict(model.named_parameters())
    for name, m in masks.items():
        new, old = after[name].detach(), before[name]
        assert torch.equal(new[~m], old[~m]), f"unselected entries of {name} moved"
        if m.any():
            assert (new[m] != old[m]).all(), f"selected entries of {name} did not all move"


def test_parameter_selection_keeps_unselected_weights_bit_identical_under_adamw(model, batches):
    masks = select_masks(score_parameters(model, batches, "fisher"), ratio=0.1)
    selection = ParameterSelection(masks)
    before = snapshot(model)
    # The optimizer holds every parameter, frozen ones too: it must not matter.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    selection.attach(model)
    assert not model.model.embed_tokens.weight.requires_grad and not model.lm_head.weight.requires_grad
    model.train()
    for step in range(4):
        b = batches[step % len(batches)]
        loss = nll_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert not p.grad[~masks[name]].any(), f"gradient of unselected entries of {name}"
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        selection.restore()
        opt.zero_grad()
    assert_only_selected_moved(model, before, masks)

    n_selected = sum(int(m.sum()) for m in masks.values())
    n_total = sum(m.numel() for m in masks.values())
    assert selection.selected_fraction == pytest.approx(n_selected / n_total)
    summary = selection.summary()
    assert summary["selected"] == n_selected and summary["total"] == n_total
    up = "model.layers.0.mlp.up_proj.weight"
    assert summary["modules"][up] == {"selected": math.ceil(0.1 * 16 * 32), "numel": 512}
    assert summary["modules"]["lm_head.weight"]["selected"] == 0

    selection.detach()
    assert model.lm_head.weight.requires_grad
    model.zero_grad()
    nll_loss(model(input_ids=b["input_ids"]).logits, b["labels"]).backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad[~masks[up]].any()  # hooks removed


@pytest.mark.slow
def test_parameter_selection_through_hf_trainer(model, batches, tmp_path):
    from transformers import Trainer, TrainingArguments

    class Items(torch.utils.data.Dataset):
        def __init__(self, batches):
            self.rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["input_ids"]))]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    masks = select_masks(score_parameters(model, batches, "fisher"), ratio=0.05)
    selection = ParameterSelection(masks).attach(model)
    before = snapshot(model)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        max_steps=3,
        learning_rate=1e-2,
        weight_decay=0.1,
        per_device_train_batch_size=2,
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Items(batches), callbacks=[selection.callback()])
    trainer.train()
    assert trainer.state.global_step == 3
    assert_only_selected_moved(model, before, masks)


class Wrapper(nn.Module):
    """Adds a ``module.`` prefix to every parameter name, like DistributedDataParallel."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_masks_match_wrapped_models_by_suffix(model, batches):
    masks = select_masks(score_parameters(model, batches[:1], "fisher"), ratio=0.1)
    wrapped = Wrapper(model)
    mapping = match_parameter_names(masks, wrapped)
    assert mapping["lm_head.weight"] == "module.lm_head.weight"
    # The other way round: masks named after the wrapper fit the bare model.
    assert match_parameter_names({"module.lm_head.weight": None}, model) == {"module.lm_head.weight": "lm_head.weight"}
    with pytest.raises(ValueError, match="matches no parameter"):
        match_parameter_names({"model.layers.7.mlp.up_proj.weight": None}, model)
    with pytest.raises(ValueError, match="shape"):
        ParameterSelection({"lm_head.weight": torch.ones(3, dtype=torch.bool)}).attach(model)

    before = snapshot(model)
    selection = ParameterSelection(masks).attach(wrapped)
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    b = batches[0]
    nll_loss(wrapped.module(input_ids=b["input_ids"]).logits, b["labels"]).backward()
    opt.step()
    selection.restore()
    assert_only_selected_moved(model, before, masks)


# ----------------------------------------------------------------------------------------------------- cache


def test_cache_reuses_scores_from_disk(model, batches, tmp_path):
    key = {"model": "tiny", "weights": "abc", "data": "forget-3", "samples": 6}
    first = score_parameters_cached(model, batches, "fisher", cache_dir=tmp_path, key_parts=key)
    path = tmp_path / f"hessian_{cache_key(key, 'fisher', 8, 0)}.pt"
    assert path.exists() and len(path.stem) == len("hessian_") + 16
    assert not first.from_cache
    assert set(torch.load(path, weights_only=True)) == set(first)

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    again = score_parameters_cached(model, batches, "fisher", cache_dir=tmp_path, key_parts=key)
    assert again.from_cache
    assert all(torch.equal(again[n], first[n]) for n in first)  # the changed weights were not rescored

    fresh = score_parameters_cached(model, batches, "fisher", cache_dir=tmp_path, key_parts={**key, "weights": "x"})
    assert not fresh.from_cache and not torch.equal(fresh["lm_head.weight"], first["lm_head.weight"])
    other = score_parameters_cached(model, batches, "ggn", cache_dir=tmp_path, key_parts=key)
    assert not other.from_cache
    assert len(list(tmp_path.glob("hessian_*.pt"))) == 3


# ------------------------------------------------------------------------------------------------------ LoRA


def test_top_modules_ranks_linear_modules_and_fits_peft(model, batches):
    scores = score_parameters(model, batches, "fisher")
    names = top_modules(scores, k=3)
    modules = dict(model.named_modules())
    assert len(names) == 3 and len(set(names)) == 3
    for name in names:
        assert isinstance(modules[name], nn.Linear)
        assert not any(f in name for f in ("embed", "lm_head", "norm"))
    linear_weights = {
        n[: -len(".weight")]: float(s.mean())
        for n, s in scores.items()
        if s.dim() == 2 and "lm_head" not in n and "embed" not in n
    }
    assert names == sorted(linear_weights, key=linear_weights.get, reverse=True)[:3]
    # Without exclusions, an Embedding is never returned when the model is given.
    everything = top_modules(scores, k=100, exclude=(), model=model)
    assert "model.embed_tokens" not in everything and "lm_head" in everything

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=names))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_modules() if n.endswith(".lora_A")}
    assert adapted == {"base_model.model." + n for n in names}
    # Masks from the bare model map onto the PEFT model's base_layer weights.
    mapping = match_parameter_names({f"{names[0]}.weight": None}, peft_model)
    assert mapping == {f"{names[0]}.weight": f"base_model.model.{names[0]}.base_layer.weight"}
