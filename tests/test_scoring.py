"""The scoring core against direct computation on single, unpadded sequences."""

from pathlib import Path

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


def test_generation_stops_at_the_end_of_the_context_and_says_so(tiny_model, tiny_tokenizer, caplog, monkeypatch):
    from llm_unlearn.evaluation.scoring import generate_from_ids

    context = tiny_model.config.max_position_embeddings
    prompt = QAFormatter(tiny_tokenizer).prompt_ids("Where was Kalo Mir born?")
    filler = tiny_tokenizer.eos_token_id + 1
    long = [filler] * (context - len(prompt) - 3) + list(prompt)  # 3 positions left
    budgets = []
    generate = tiny_model.generate
    monkeypatch.setattr(tiny_model, "generate", lambda **kw: budgets.append(kw["max_new_tokens"]) or generate(**kw))
    with caplog.at_level("WARNING"):
        generate_from_ids(tiny_model, tiny_tokenizer, [long, list(prompt)], max_new_tokens=50, batch_size=1)
    assert sorted(budgets) == [3, 50]  # the long prompt gets what the context has left, the short one its budget
    assert "1 of 2 prompts" in caplog.text and "leave less than max_new_tokens=50" in caplog.text
    with pytest.raises(ValueError, match="fills the model's context"):
        generate_from_ids(tiny_model, tiny_tokenizer, [[filler] * context], max_new_tokens=5)


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


# --- bounded scoring ------------------------------------------------------------------------------------------------

ITEMS = [
    ("Where was Kalo Mir born?", "In Torport, Belia."),
    ("Q?", "A much longer answer with several more words in it."),
    ("What is the capital of Belia?", "Torport."),
    ("Who wrote it?", "Kalo Mir wrote it, in Torport."),
    ("When?", "Long ago."),
]


def _reference_scores(model, encoded, pad_token_id, batch_size):
    """The plain computation, in float64: full logits of each padded batch, then every statistic over the whole
    vocabulary (sigma from the centred second moment, the exact value)."""
    from llm_unlearn.data.formatting import QACollator

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = QACollator(pad_token_id)([encoded[i] for i in idx])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1].double()
        labels = batch["labels"][:, 1:]
        for row, i in enumerate(idx):
            keep = labels[row] != -100
            logp = torch.log_softmax(logits[row][keep], -1)
            y = labels[row][keep]
            p = logp.exp()
            mu = (p * logp).sum(-1)
            sigma = (p * (logp - mu[:, None]).square()).sum(-1).sqrt()
            lp = logp.gather(-1, y[:, None])[:, 0]
            out[i] = (lp.numpy(), (logits[row][keep].argmax(-1) == y).numpy(), mu.numpy(), sigma.numpy())
    return out


def _assert_scores_match(scores, reference):
    for s, (lp, match, mu, sigma) in zip(scores, reference):
        np.testing.assert_allclose(s.logprobs, lp, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.mu, mu, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.sigma, sigma, rtol=1e-5, atol=1e-5)
        assert (s.argmax_match == match).all()


def _bound_for(positions: int, vocab: int) -> int:
    """The smallest bound whose chunks hold ``positions`` answer positions."""
    from llm_unlearn.evaluation.scoring import HEADROOM, VOCAB_TEMPORARIES

    return int(np.ceil(positions * VOCAB_TEMPORARIES * vocab * 4 / (1 - HEADROOM)))


@pytest.mark.parametrize("positions", [1, 2, 7, 10_000])
def test_chunked_scores_equal_a_full_logits_reference(tiny_model, tiny_tokenizer, positions):
    from llm_unlearn.evaluation.scoring import positions_per_chunk, score_encoded, scoring_route

    f = QAFormatter(tiny_tokenizer)
    encoded = [f.encode(q, a) for q, a in ITEMS]
    vocab = len(tiny_tokenizer)
    bound = _bound_for(positions, vocab)
    assert positions_per_chunk(bound, vocab) == positions
    assert scoring_route(tiny_model, encoded[0]["input_ids"]).kind == "split"
    chunks = []  # rows of each projection of answer positions (2-D inputs; the route's probe is 3-D)
    hook = tiny_model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: chunks.append(args[0].shape[0]) if args[0].dim() == 2 else None
    )
    try:
        scores = score_encoded(tiny_model, encoded, tiny_tokenizer.pad_token_id, batch_size=3, max_memory=bound)
    finally:
        hook.remove()
    _assert_scores_match(scores, _reference_scores(tiny_model, encoded, tiny_tokenizer.pad_token_id, 3))
    answer_positions = sum(sum(1 for y in e["labels"][1:] if y != -100) for e in encoded)
    assert sum(chunks) == answer_positions  # only answer positions reach the head, each once
    assert max(chunks) <= positions
    if positions == 1:
        assert len(chunks) == answer_positions


def test_bound_to_chunk_size_arithmetic():
    from llm_unlearn.evaluation.scoring import positions_per_chunk

    # 1 GiB less 1/4 headroom, over 2 fp32 arrays of 128,256 logits (1,026,048 bytes) per position
    assert positions_per_chunk(2**30, 128_256) == (2**30 * 3 // 4) // 1_026_048 == 784
    assert positions_per_chunk(256 * 2**20, 128_256) == 196
    assert positions_per_chunk(2**30, 400) == (2**30 * 3 // 4) // 3_200
    with pytest.raises(ValueError, match="raise it to at least 1.3 MiB") as e:
        positions_per_chunk(2**20, 128_256)
    need = int(str(e.value).rsplit("(", 1)[1].split()[0])
    assert positions_per_chunk(need, 128_256) == 1 and need == 1_368_064


def test_soft_capped_and_unsplittable_models_are_scored_through_their_forward(tiny_tokenizer):
    """A model whose logits are not its head over its decoder goes through its own forward: with a boolean
    ``logits_to_keep`` on row groups (soft-capped Gemma-like configs), or full logits per sub-batch (no head)."""
    from types import SimpleNamespace

    from llm_unlearn.evaluation.scoring import score_encoded, scoring_route
    from llm_unlearn.modeling import build_tiny_llama

    f = QAFormatter(tiny_tokenizer)
    encoded = [f.encode(q, a) for q, a in ITEMS]
    pad, vocab = tiny_tokenizer.pad_token_id, len(tiny_tokenizer)
    capped = build_tiny_llama(tiny_tokenizer, seed=1, hidden_size=32, num_layers=1).eval()
    capped.config.final_logit_softcapping = 30.0  # Llama ignores it: the reference stays the plain logits
    route = scoring_route(capped, encoded[0]["input_ids"])
    assert route.kind == "logits_to_keep" and "final_logit_softcapping=30.0" in route.reason
    reference = _reference_scores(capped, encoded, pad, 3)
    for positions in (1, 9, 10_000):  # 1 and 9: row groups down to one row, over the bound
        _assert_scores_match(score_encoded(capped, encoded, pad, 3, _bound_for(positions, vocab)), reference)

    class Doubled(torch.nn.Module):  # a head that rescales its logits, no decoder/head split, no logits_to_keep
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask=None, use_cache=None):
            return SimpleNamespace(logits=2 * self.lm(input_ids=input_ids, attention_mask=attention_mask).logits)

    doubled = Doubled(capped)
    assert scoring_route(doubled, encoded[0]["input_ids"]).kind == "full_logits"
    reference = _reference_scores(doubled, encoded, pad, 3)
    for positions in (1, 10_000):
        _assert_scores_match(score_encoded(doubled, encoded, pad, 3, _bound_for(positions, vocab)), reference)


def test_a_lora_model_is_split_through_its_base(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    from llm_unlearn.evaluation.scoring import score_encoded, scoring_route
    from llm_unlearn.modeling import build_tiny_llama

    base = build_tiny_llama(tiny_tokenizer, seed=2, hidden_size=32, num_layers=1)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(base, lora).eval()  # random B: the adapter changes the logits
    f = QAFormatter(tiny_tokenizer)
    encoded = [f.encode(q, a) for q, a in ITEMS]
    assert scoring_route(model, encoded[0]["input_ids"]).kind == "split"
    bound = _bound_for(3, len(tiny_tokenizer))
    scores = score_encoded(model, encoded, tiny_tokenizer.pad_token_id, 2, bound)
    _assert_scores_match(scores, _reference_scores(model, encoded, tiny_tokenizer.pad_token_id, 2))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("512MB", 512 * 10**6), ("1.5GiB", 3 * 2**29), ("2 gib", 2**31), ("1073741824", 2**30), (4096, 4096)],
)
def test_max_scoring_memory_sizes(value, expected):
    from llm_unlearn.evaluation.scoring import parse_memory_size

    assert parse_memory_size(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", r"'lots' is not a size: write bytes or a number and a unit, e.g. 512MB or 2GiB"),
        ("5XB", r"'5XB' has an unknown unit 'XB': use B, KB, MB, GB, TB \(powers of 1000\) or KiB, MiB, GiB, TiB"),
        ("0", r"'0' is not positive"),
        (1.5, r"must be a number of bytes or a size such as 512MB"),
    ],
)
def test_max_scoring_memory_errors_say_what_to_write(value, message):
    from llm_unlearn.evaluation.evaluator import EvalConfig

    with pytest.raises(ValueError, match=message) as e:
        EvalConfig(max_scoring_memory=value)
    assert str(e.value).startswith("--max_scoring_memory ")  # the flag to fix


def test_the_eval_command_reads_max_scoring_memory():
    from llm_unlearn.cli import build_parser, dataclass_from_args
    from llm_unlearn.evaluation.evaluator import EvalConfig, cache_key

    args = build_parser().parse_args(["eval", "--model", "m", "--data", "d", "--max_scoring_memory", "512MiB"])
    cfg = dataclass_from_args(EvalConfig, args)
    assert cfg.max_scoring_memory == 512 * 2**20
    assert EvalConfig().max_scoring_memory == 2**30
    # a bound changes memory, not results: the evaluation cache is shared
    assert cache_key(Path("/nonexistent"), {}, cfg) == cache_key(Path("/nonexistent"), {}, EvalConfig())


# --- generation stops at the chat template's end of turn ------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A tiny BPE tokenizer with a ChatML template whose end of turn (``<|im_end|>``) is not its EOS (``</s>``)."""
    from llm_unlearn.modeling import train_bpe_tokenizer

    tok = train_bpe_tokenizer([q + " " + a for q, a in ITEMS] + ["K Z"], vocab_size=300)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _bigram_model(tok, successor):
    """A Llama whose next token depends only on the current one: one-hot embeddings, attention and MLP outputs
    zeroed (the residual stream stays the embedding), and a head that maps token i to ``successor(i)``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(tok)
    hidden = -(-vocab // 32) * 32
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=hidden // 32,
        num_key_value_heads=hidden // 32,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for i in range(vocab):
            model.lm_head.weight[successor(i), i] = 1.0
    return model


def test_generation_stops_at_the_chat_templates_end_of_turn(chat_tokenizer):
    from llm_unlearn.evaluation.scoring import end_of_turn_token_id, stop_token_ids

    tok = chat_tokenizer
    im_end, eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id
    assert end_of_turn_token_id(tok) == im_end != eos
    k, z = tok.convert_tokens_to_ids("K"), tok.convert_tokens_to_ids("Z")
    model = _bigram_model(tok, lambda i: {k: im_end, im_end: z, z: z}.get(i, k))  # ... K <|im_end|> Z Z Z ...
    assert stop_token_ids(tok, model) == [eos, im_end]
    f = QAFormatter(tok)
    assert generate_answers(model, f, ["Where was Kalo Mir born?", "Q?"], max_new_tokens=6) == ["K", "K"]
    # the same model stopped at EOS only runs past its end of turn
    prompt = torch.tensor([f.prompt_ids("Q?")])
    gen = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert tok.decode(gen[0, prompt.shape[1] :], skip_special_tokens=True) == "KZZZZ"


def test_no_end_of_turn_without_a_chat_template(tiny_tokenizer):
    from llm_unlearn.evaluation.scoring import end_of_turn_token_id, stop_token_ids

    assert end_of_turn_token_id(tiny_tokenizer) is None
    assert stop_token_ids(tiny_tokenizer) == [tiny_tokenizer.eos_token_id]
