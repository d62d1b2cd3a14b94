"""The unlearning losses (llm_unlearn.trainers.losses) against numbers computed by hand, no model involved.

Conventions checked throughout: ``logits[:, t]`` predicts ``labels[:, t + 1]`` (the functions shift), positions
labelled -100 (prompt, padding) are ignored, and batch losses are means over sequences of per-sequence quantities.
"""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.trainers import losses as L

V = 4  # vocabulary size of the hand-made logits
IGN = L.IGNORE_INDEX


def logits_for(probs: list[list[list[float]]]) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` (``[B, T, V]``): ``log p``."""
    return torch.tensor(probs, dtype=torch.float64).log()


def row(p_token: float, token: int, vocab: int = V) -> list[float]:
    """A next-token distribution giving ``p_token`` to ``token`` and the rest uniformly to the others."""
    rest = (1.0 - p_token) / (vocab - 1)
    return [p_token if v == token else rest for v in range(vocab)]


UNIFORM = [1.0 / V] * V


# --- sequence_logprobs / sequence_nll / nll_loss --------------------------------------------------------------------


def test_uniform_logits_give_log_vocab_per_token():
    labels = torch.tensor([[IGN, IGN, 1, 2, 3]])
    logits = torch.zeros(1, 5, V)  # uniform next-token distribution
    logp, n = L.sequence_logprobs(logits, labels)
    assert n.tolist() == [3]
    assert logp.item() == pytest.approx(-3 * math.log(V), abs=1e-6)
    assert L.sequence_nll(logits, labels).item() == pytest.approx(math.log(V), abs=1e-6)
    assert L.nll_loss(logits, labels).item() == pytest.approx(math.log(V), abs=1e-6)
    assert L.gradient_ascent_loss(logits, labels).item() == pytest.approx(-math.log(V), abs=1e-6)


def test_shift_logits_at_t_predict_label_at_t_plus_1():
    # Answer = tokens 2 then 3 at positions 2 and 3. The distribution at position 1 must give p(2) = 0.5 and the one
    # at position 2 p(3) = 0.25; position 0, the last position and the distributions' other entries do not matter.
    labels = torch.tensor([[IGN, IGN, 2, 3]])
    probs = [[row(0.9, 0), row(0.5, 2), row(0.25, 3), row(0.99, 1)]]
    logp, n = L.sequence_logprobs(logits_for(probs), labels)
    assert n.item() == 2
    assert logp.item() == pytest.approx(math.log(0.5) + math.log(0.25), abs=1e-6)
    assert L.sequence_nll(logits_for(probs), labels).item() == pytest.approx(
        -(math.log(0.5) + math.log(0.25)) / 2, abs=1e-6
    )
    # reading the logits unshifted (position t for label t) would give p(2) = 0.75/3 and p(3) = 0.01/3 instead
    assert logp.item() != pytest.approx(math.log(0.75 / 3) + math.log(0.01 / 3), abs=1e-3)


def test_ignored_positions_do_not_count_whatever_their_logits():
    labels = torch.tensor([[IGN, 1, 1, IGN, IGN]])  # prompt, two answer tokens (predicted at 0 and 1), padding
    base = [row(0.5, 1), row(0.5, 1), row(0.5, 1), row(0.5, 1), row(0.5, 1)]
    wild = [row(0.5, 1), row(0.5, 1), row(0.001, 1), row(0.999, 2), row(0.001, 3)]
    a, b = L.sequence_nll(logits_for([base]), labels), L.sequence_nll(logits_for([wild]), labels)
    assert a.item() == pytest.approx(math.log(2), abs=1e-6)
    assert b.item() == pytest.approx(a.item(), abs=1e-6)
    assert L.sequence_logprobs(logits_for([wild]), labels)[1].item() == 2


def test_nll_loss_is_a_mean_over_sequences_of_per_sequence_means():
    # Sequence 0: one answer token with p = 1/2  -> nll 0 = log 2.
    # Sequence 1: three answer tokens each with p = 1/8 (V = 8) -> nll 1 = log 8 = 3 log 2.
    # Sequence mean: (log 2 + 3 log 2) / 2 = 2 log 2 ≈ 1.386; a token-level mean would give
    # (1·log 2 + 3·3 log 2) / 4 = 2.5 log 2 ≈ 1.733.
    vocab = 8
    labels = torch.tensor([[IGN, IGN, IGN, 5, IGN], [IGN, 1, 1, 1, IGN]])
    probs = [
        [[1 / vocab] * vocab, [1 / vocab] * vocab, row(0.5, 5, vocab), [1 / vocab] * vocab, [1 / vocab] * vocab],
        [[1 / vocab] * vocab] * 5,
    ]
    logits = logits_for(probs)
    per_seq = L.sequence_nll(logits, labels)
    assert per_seq.tolist() == pytest.approx([math.log(2), 3 * math.log(2)], abs=1e-6)
    assert L.nll_loss(logits, labels).item() == pytest.approx(2 * math.log(2), abs=1e-6)
    logp, n = L.sequence_logprobs(logits, labels)
    token_mean = (-logp.sum() / n.sum()).item()
    assert token_mean == pytest.approx(2.5 * math.log(2), abs=1e-6)
    assert L.nll_loss(logits, labels).item() != pytest.approx(token_mean, abs=1e-3)
    # ... and so the loss of the batch is the mean of the losses of its single-sequence batches
    singles = [L.nll_loss(logits[i : i + 1], labels[i : i + 1]).item() for i in range(2)]
    assert L.nll_loss(logits, labels).item() == pytest.approx(sum(singles) / 2, abs=1e-6)


def test_sequence_without_answer_tokens_has_zero_nll_not_nan():
    labels = torch.tensor([[IGN, IGN, IGN]])
    nll = L.sequence_nll(torch.zeros(1, 3, V), labels)
    assert nll.item() == 0.0 and not torch.isnan(nll).any()


def test_losses_are_computed_in_float32_from_half_logits():
    labels = torch.tensor([[IGN, 1, 2]])
    logits = torch.zeros(1, 3, V, dtype=torch.bfloat16)
    assert L.nll_loss(logits, labels).dtype == torch.float32
    assert L.nll_loss(logits, labels).item() == pytest.approx(math.log(V), abs=1e-6)


# --- gradient ascent / NPO / SimNPO / DPO ----------------------------------------------------------------------------


def test_gradient_ascent_is_minus_nll():
    labels = torch.tensor([[IGN, 2, 3], [IGN, IGN, 0]])
    probs = [[UNIFORM, row(0.5, 3), UNIFORM], [UNIFORM, row(0.25, 0), UNIFORM]]
    # seq 0: tokens 2 (p 1/4 at position 0) and 3 (p 1/2): nll (log 4 + log 2)/2 = 1.5 log 2; seq 1: log 4 = 2 log 2
    expected = -(1.5 * math.log(2) + 2 * math.log(2)) / 2
    assert L.gradient_ascent_loss(logits_for(probs), labels).item() == pytest.approx(expected, abs=1e-6)


def test_npo_loss_hand_values():
    beta = 0.1
    logp = torch.tensor([-5.0, -7.0])
    # equal to the reference: -(2/β)·log σ(0) = (2/β)·log 2
    assert L.npo_loss(logp, logp.clone(), beta).item() == pytest.approx(-(2 / beta) * math.log(0.5), abs=1e-5)
    assert L.npo_loss(logp, logp.clone(), beta).item() == pytest.approx(20 * math.log(2), abs=1e-5)
    # logp − ref = (−10, +10): -(2/β)·mean(log σ(1), log σ(−1)) with log σ(x) = −log(1 + e^{−x})
    ref = logp - torch.tensor([-10.0, 10.0])
    expected = (2 / beta) * (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    assert L.npo_loss(logp, ref, beta).item() == pytest.approx(expected, abs=1e-5)
    # lowering the forget log-prob below the reference lowers the loss (that is what NPO minimises towards)
    assert L.npo_loss(logp - 5, logp, beta) < L.npo_loss(logp, logp, beta) < L.npo_loss(logp + 5, logp, beta)


def test_npo_gradient_at_the_reference_is_gradient_ascent_scaled():
    # d/dlogp of -(2/β) log σ(-β(logp - ref)) at logp = ref is (2/β)·β·σ(0) = 1 per sequence; mean over 2 -> 1/2
    logp = torch.tensor([-3.0, -4.0], requires_grad=True)
    L.npo_loss(logp, logp.detach().clone(), 0.1).backward()
    assert logp.grad.tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


def test_simnpo_loss_hand_values():
    beta, delta = 4.5, 0.0
    logp = torch.tensor([-2.0, -6.0])
    lengths = torch.tensor([2, 3])
    # logp/len = (−1, −2): -(2/β)·mean(log σ(4.5), log σ(9))
    expected = (2 / beta) * (math.log1p(math.exp(-4.5)) + math.log1p(math.exp(-9.0))) / 2
    assert L.simnpo_loss(logp, lengths, beta, delta).item() == pytest.approx(expected, rel=1e-5)
    # length-normalised: doubling both log-prob and length changes nothing
    assert L.simnpo_loss(2 * logp, 2 * lengths, beta, delta).item() == pytest.approx(
        L.simnpo_loss(logp, lengths, beta, delta).item(), rel=1e-6
    )
    # a zero length is clamped to 1 (no division by zero)
    assert torch.isfinite(L.simnpo_loss(torch.tensor([0.0]), torch.tensor([0]), beta, delta))
    assert L.simnpo_loss(torch.tensor([0.0]), torch.tensor([0]), beta, delta).item() == pytest.approx(
        (2 / beta) * math.log(2), rel=1e-6
    )


def test_simnpo_margin_follows_the_paper():
    """The paper (Fan et al., eq. 4): −(2/β)·log σ(−(β/|y|)·log π(y|x) − γ), γ = β·δ. With δ = 1 the margin is
    subtracted: per-token losses (1, 2) become (0, 1) inside σ."""
    beta, delta = 4.5, 1.0
    logp, lengths = torch.tensor([-2.0, -6.0]), torch.tensor([2, 3])
    gamma = beta * delta
    paper = [-(2 / beta) * math.log(1 / (1 + math.exp(-(-(beta / n) * lp - gamma)))) for lp, n in ((-2, 2), (-6, 3))]
    assert L.simnpo_loss(logp, lengths, beta, delta).item() == pytest.approx(sum(paper) / 2, rel=1e-6)
    by_hand = (2 / beta) * (math.log(2) + math.log1p(math.exp(-4.5))) / 2  # σ(0) and σ(4.5)
    assert L.simnpo_loss(logp, lengths, beta, delta).item() == pytest.approx(by_hand, rel=1e-6)
    # a positive margin asks for more forgetting: the loss at the same point is higher than with δ = 0
    assert L.simnpo_loss(logp, lengths, beta, delta) > L.simnpo_loss(logp, lengths, beta, 0.0)


def test_dpo_loss_hand_values():
    beta = 0.1
    scale = 2 / beta  # open-unlearning's and our NPO's scale: −(2/β)·log σ(β·Δ)
    a, b = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -8.0])
    # policy == reference: -(2/β)·log σ(0) = (2/β)·log 2
    assert L.dpo_loss(a, b, a.clone(), b.clone(), beta).item() == pytest.approx(scale * math.log(2), rel=1e-6)
    # chosen up by 10 over its reference and rejected down by 10: margin β·20 = 2 -> (2/β)·log(1 + e^{−2})
    assert L.dpo_loss(a + 10, b - 10, a, b, beta).item() == pytest.approx(scale * math.log1p(math.exp(-2)), rel=1e-6)
    # the reverse preference: (2/β)·log(1 + e^{2})
    assert L.dpo_loss(a - 10, b + 10, a, b, beta).item() == pytest.approx(scale * math.log1p(math.exp(2)), rel=1e-6)
    # per-pair margins are averaged: margins (1, −1)
    got = L.dpo_loss(torch.tensor([10.0, 0.0]), torch.zeros(2), torch.zeros(2), torch.tensor([0.0, -10.0]), beta)
    assert got.item() == pytest.approx(scale * (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2, rel=1e-6)


def test_idk_dpo_gradient_at_the_reference_matches_npo():
    """With the 2/β scale, the rejected (forget) answer's gradient at the reference is β-free, as NPO's: −1/2 per
    sequence for a mean over 2 (NPO: +1/2 on logp of the forget answer, here the loss falls as logp_l falls)."""
    for beta in (0.1, 1.0):
        rejected = torch.tensor([-3.0, -4.0], requires_grad=True)
        chosen = torch.tensor([-5.0, -6.0])
        L.dpo_loss(chosen, rejected, chosen.clone(), rejected.detach().clone(), beta).backward()
        assert rejected.grad.tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


# --- KL to uniform / answer KL to the reference ----------------------------------------------------------------------


def test_kl_uniform_is_zero_for_uniform_and_matches_a_hand_value():
    labels = torch.tensor([[IGN, 1, 2]])
    assert L.kl_uniform_loss(torch.zeros(1, 3, V), labels).item() == pytest.approx(0.0, abs=1e-7)
    # V = 2, answer distribution (0.8, 0.2): KL(U‖p) = ½ log(½/0.8) + ½ log(½/0.2) = −log 2 − ½(log 0.8 + log 0.2)
    labels = torch.tensor([[IGN, 0]])
    probs = [[[0.8, 0.2], [0.01, 0.99]]]  # only position 0 predicts an answer token
    expected = -math.log(2) - 0.5 * (math.log(0.8) + math.log(0.2))
    assert L.kl_uniform_loss(logits_for(probs), labels).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.2231, abs=1e-4)


def test_kl_uniform_averages_tokens_then_sequences():
    # seq 0: one answer position with KL k1; seq 1: two answer positions, KL 0 and k1 -> (k1 + k1/2) / 2
    k1 = -math.log(2) - 0.5 * (math.log(0.8) + math.log(0.2))
    labels = torch.tensor([[IGN, IGN, 0], [IGN, 0, 0]])
    skew, flat = [0.8, 0.2], [0.5, 0.5]
    probs = [[flat, skew, flat], [flat, skew, flat]]
    assert L.kl_uniform_loss(logits_for(probs), labels).item() == pytest.approx((k1 + k1 / 2) / 2, abs=1e-6)


def test_forget_gate_stops_items_whose_loss_reached_their_level_and_passes_no_gradient():
    nll = torch.tensor([0.1, 2.0, 1.5], requires_grad=True)
    gate = L.forget_gate(nll, torch.tensor([1.0, 1.0, 1.5]))  # one level per item; reaching it stops the item
    assert gate.tolist() == [1.0, 0.0, 0.0] and not gate.requires_grad
    assert L.forget_gate(nll, 3.0).tolist() == [1.0, 1.0, 1.0]


def test_gated_mean_divides_by_the_whole_batch_and_stopped_items_get_no_gradient():
    per = torch.tensor([1.0, 3.0, 5.0, 7.0], requires_grad=True)
    gate = torch.tensor([1.0, 0.0, 1.0, 0.0])
    got = L.gated_mean(per, gate)
    assert got.item() == pytest.approx((1.0 + 5.0) / 4)
    got.backward()
    assert per.grad.tolist() == [0.25, 0.0, 0.25, 0.0]
    # two half batches average to the whole batch (gradient accumulation gives the large-batch update)
    halves = (L.gated_mean(per[:2], gate[:2]) + L.gated_mean(per[2:], gate[2:])) / 2
    assert halves.item() == pytest.approx(got.item())


def test_sequence_kl_uniform_is_the_per_sequence_form_of_the_loss():
    labels = torch.tensor([[IGN, IGN, 0], [IGN, 0, 0]])
    probs = [[[0.5, 0.5], [0.8, 0.2], [0.5, 0.5]], [[0.5, 0.5], [0.8, 0.2], [0.5, 0.5]]]
    per = L.sequence_kl_uniform(logits_for(probs), labels)
    k1 = -math.log(2) - 0.5 * (math.log(0.8) + math.log(0.2))
    assert per.tolist() == pytest.approx([k1, k1 / 2], abs=1e-6)
    assert L.kl_uniform_loss(logits_for(probs), labels).item() == pytest.approx(per.mean().item(), abs=1e-7)


def test_answer_kl_hand_value_identity_and_prompt_masking():
    labels = torch.tensor([[IGN, IGN, 1, 1], [IGN, 3, 3, IGN]])
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, V, generator=gen)
    assert L.answer_kl_loss(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-7)

    # one answer position, V = 2: KL(ref‖p) with ref = (0.5, 0.5), p = (0.8, 0.2)
    lab = torch.tensor([[IGN, 0]])
    ref = logits_for([[[0.5, 0.5], [0.5, 0.5]]])
    pol = logits_for([[[0.8, 0.2], [0.5, 0.5]]])
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert L.answer_kl_loss(pol, ref, lab).item() == pytest.approx(expected, abs=1e-6)
    # the direction is KL(ref ‖ θ): swapping the arguments gives a different number
    swapped = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert L.answer_kl_loss(ref, pol, lab).item() == pytest.approx(swapped, abs=1e-6)
    assert expected != pytest.approx(swapped, abs=1e-3)

    # prompt positions (which predict -100 labels) and the last position may differ wildly: the loss is unchanged
    ref = torch.randn(2, 4, V, generator=gen)
    pol = torch.randn(2, 4, V, generator=gen)
    before = L.answer_kl_loss(pol, ref, labels).item()
    wild = pol.clone()
    wild[0, 0] = torch.tensor([100.0, -100.0, 50.0, -50.0])  # predicts a prompt label
    wild[1, 2:] = torch.tensor([-80.0, 80.0, 0.0, 40.0])  # predicts padding / past the end
    wild[0, 3] = 1e3  # the last position predicts nothing
    assert L.answer_kl_loss(wild, ref, labels).item() == pytest.approx(before, abs=1e-6)
    assert before > 0
    # ... while an answer position does change it
    moved = pol.clone()
    moved[0, 1] = torch.tensor([100.0, -100.0, 50.0, -50.0])
    assert L.answer_kl_loss(moved, ref, labels).item() != pytest.approx(before, abs=1e-3)
