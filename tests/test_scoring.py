"""The scoring core against direct computation on single, unpadded sequences."""

import numpy as np
import pytest
import torch

from llm_unlearn.data.formatting import QAFormatter
from llm_unlearn.evaluation.scoring import generate_answers, score_answers, truncate_generation


def _direct_logprobs(model, formatter, q, a):
    enc = formatter.encode(q, a)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    labels = torch.tensor(enc["labels"][1:])
    keep = labels != -100
    return logp[keep].gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1).numpy(), logp[keep]


def test_batched_scores_equal_single_sequence_scores(tiny_model, tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer)
    qs = ["Where was Kalo Mir born?", "Q?", "What is the capital of Belia?"]
    ans = ["In Torport, Belia.", "A much longer answer with several more words in it.", "Torport."]
    scores = score_answers(tiny_model, f, qs, ans, batch_size=3)
    for q, a, s in zip(qs, ans, scores):
        direct, logp = _direct_logprobs(tiny_model, f, q, a)
        np.testing.assert_allclose(s.logprobs, direct, atol=1e-5)
        assert s.length == len(f.completion_ids(q, a))
        assert abs(s.avg_loss + direct.mean()) < 1e-5
        # Min-K%++ statistics: expectation and std of log p under p
        p = logp.exp()
        mu = (p * logp).sum(-1).numpy()
        np.testing.assert_allclose(s.mu, mu, atol=1e-4)
        assert (s.sigma >= 0).all()
        assert s.argmax_match.dtype == bool


def test_generation_batched_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer)
    qs = ["Where was Kalo Mir born?", "Q?", "What is the capital of Belia today?"]
    batched = generate_answers(tiny_model, f, qs, max_new_tokens=8, batch_size=3)
    single = [generate_answers(tiny_model, f, [q], max_new_tokens=8, batch_size=1)[0] for q in qs]
    assert batched == single


def test_generation_is_cut_at_blank_line():
    assert truncate_generation(" Torport.\n\nQuestion: next") == "Torport."
    assert truncate_generation("one\ntwo") == "one\ntwo"


def test_the_answer_eos_is_scored_like_every_other_answer_token(tiny_model, tiny_tokenizer):
    """Convention: the EOS that ends an answer is a supervised answer token (the model learned to stop there), so
    it counts in the per-token log-probs behind Min-K%, Min-K%++, extraction strength and exact memorization."""
    f = QAFormatter(tiny_tokenizer)
    (s,) = score_answers(tiny_model, f, ["Where was Kalo Mir born?"], ["In Torport."], batch_size=1)
    completion = f.completion_ids("Where was Kalo Mir born?", "In Torport.")
    assert completion[-1] == tiny_tokenizer.eos_token_id
    assert s.length == len(completion) == len(s.argmax_match)
    direct, _ = _direct_logprobs(tiny_model, f, "Where was Kalo Mir born?", "In Torport.")
    assert s.logprobs[-1] == pytest.approx(direct[-1], abs=1e-5)  # the last scored token is the EOS
