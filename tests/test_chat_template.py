"""Chat-template correctness with SmolLM2-135M-Instruct's real tokenizer and template on a tiny random Llama (the
vocabulary kept, two narrow layers): which tokens are supervised, batched vs one-at-a-time generation, batched
scoring vs a plain unbatched forward pass."""

import numpy as np
import pytest
import torch

from llm_unlearn.data.formatting import IGNORE_INDEX, QACollator, QAFormatter
from llm_unlearn.evaluation.scoring import generate_answers, score_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# SmolLM2's template writes this system turn when the conversation has none.
DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
QA = [
    ("Where was Kalo Mir born?", "In Torport, Belia."),
    ("Q?", "A much longer answer, with several more words in it.\nAnd a second line."),
    ("What is the capital of Belia?", "Torport."),
]


@pytest.fixture(scope="module")
def smol_model(smollm2_tokenizer):
    """Random, two layers and an output layer of its own: a tied one-layer random model mostly repeats the last
    prompt token (its own embedding scores highest), the newline after ``assistant``, so every greedy answer would
    be empty, and without a second layer the answers hardly depend on the question."""
    from transformers import LlamaForCausalLM

    from llm_unlearn.modeling import tiny_llama_config

    config = tiny_llama_config(smollm2_tokenizer, hidden_size=64, num_layers=2)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    assert model.config.vocab_size == 49152 and model.config.eos_token_id == smollm2_tokenizer.eos_token_id
    return model


def test_the_assistant_turn_and_its_end_of_turn_token_are_supervised_the_system_prompt_is_not(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert (tok.eos_token, tok.pad_token_id) == ("<|im_end|>", tok.eos_token_id)  # end of turn = EOS = pad
    f = QAFormatter(tok)
    assert f.use_chat
    for question, answer in QA:
        enc = f.encode(question, answer)
        prompt = f.prompt_ids(question)
        n = len(prompt)
        assert tok.decode(prompt) == f"{DEFAULT_SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        assert enc["input_ids"][:n] == prompt and enc["labels"][:n] == [IGNORE_INDEX] * n
        supervised = [t for t in enc["labels"] if t != IGNORE_INDEX]
        assert supervised == enc["input_ids"][n:]
        assert tok.decode(supervised) == answer + "<|im_end|>"  # the answer and its end of turn, nothing after
        assert supervised.count(tok.eos_token_id) == 1 and supervised[-1] == tok.eos_token_id
        # prompt and completion tokenized apart give the tokens of the whole rendered conversation
        conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        full = tok.apply_chat_template(conversation, tokenize=False)
        assert full.endswith("<|im_end|>\n")
        assert tok(full.removesuffix("\n"), add_special_tokens=False)["input_ids"] == enc["input_ids"]


def test_padding_with_the_end_of_turn_token_keeps_the_real_one_supervised(smollm2_tokenizer):
    f = QAFormatter(smollm2_tokenizer)
    long, short = (f.encode(q, a) for q, a in QA[1:])
    batch = QACollator(smollm2_tokenizer.pad_token_id)([long, short])
    k = len(short["input_ids"])
    assert batch["labels"][1, k - 1].item() == smollm2_tokenizer.eos_token_id  # the end of turn, equal to the pad id
    assert (batch["labels"][1, k:] == IGNORE_INDEX).all() and not batch["attention_mask"][1, k:].any()


def _unbatched_logprobs(model, formatter, question, answer) -> np.ndarray:
    """log p of each supervised token, from one unpadded sequence and a plain forward pass."""
    enc = formatter.encode(question, answer)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc["input_ids"]])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    rows = [t - 1 for t, label in enumerate(enc["labels"]) if label != IGNORE_INDEX]  # position t-1 predicts t
    return np.array([logp[r, enc["labels"][r + 1]].item() for r in rows])


def test_batched_scores_equal_an_unbatched_reference(smol_model, smollm2_tokenizer):
    f = QAFormatter(smollm2_tokenizer)
    questions, answers = zip(*QA)
    scores = score_answers(smol_model, f, questions, answers, batch_size=3)
    for (q, a), s in zip(QA, scores):
        expected = _unbatched_logprobs(smol_model, f, q, a)
        assert s.length == len(f.completion_ids(q, a)) == len(expected)
        np.testing.assert_allclose(s.logprobs, expected, atol=1e-5)


def test_batched_generation_equals_one_at_a_time(smol_model, smollm2_tokenizer):
    f = QAFormatter(smollm2_tokenizer)
    questions = [q for q, _ in QA]
    batched = generate_answers(smol_model, f, questions, max_new_tokens=6, batch_size=3)
    single = [generate_answers(smol_model, f, [q], max_new_tokens=6, batch_size=1)[0] for q in questions]
    assert batched == single
    assert len(set(batched)) == len(questions), "the answers must depend on the (differently padded) prompts"


LLAMA3_STYLE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}\n"
    "{%- for m in messages %}{%- if m['role'] == 'system' %}{{ m['content'] }}{%- endif %}{%- endfor %}<|eot_id|>"
    "{%- for m in messages %}{%- if m['role'] != 'system' %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}"
)


def test_a_dated_chat_template_renders_the_same_prompt_on_every_day(smollm2_tokenizer, monkeypatch):
    """A Llama-3-style template writes "Today Date" unless given one: two renderings on different days must be
    identical (the date is pinned), and another pinned date or system turn is another prompt format (cache key)."""
    import copy
    import datetime

    import transformers.utils.chat_template_utils as ctu

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = LLAMA3_STYLE
    rendered = []
    for day in (datetime.datetime(2026, 1, 1), datetime.datetime(2026, 12, 4)):
        monkeypatch.setattr(ctu, "datetime", type("D", (), {"now": staticmethod(lambda tz=None, d=day: d)}))
        f = QAFormatter(tok)
        rendered.append((f.prompt_text("Q?"), f.encode("Q?", "A.")["input_ids"], f.prompt_format()))
    assert rendered[0] == rendered[1]
    assert "Today Date: 26 Jul 2024" in rendered[0][0]
    assert QAFormatter(tok, chat_date="01 Jan 2030").prompt_format() != rendered[0][2]
    with_system = QAFormatter(tok, system_prompt="Answer briefly.")
    assert "Answer briefly." in with_system.prompt_text("Q?") and with_system.prompt_format() != rendered[0][2]
