"""QA formatting: prompt masked, answer supervised, padding masked by length."""

import pytest
import torch

from llm_unlearn.data.formatting import (
    IGNORE_INDEX,
    QACollator,
    QADataset,
    QAFormatter,
    TruncationReport,
    truncation_report,
)

LONG_Q = "What is " + "very " * 30 + "long?"
LONG_A = "Torport " * 20 + "Belia."


def test_prompt_is_masked_and_answer_with_eos_is_supervised(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer)
    enc = f.encode("Where was Kalo Mir born?", "In Torport, Belia.")
    prompt = f.prompt_ids("Where was Kalo Mir born?")
    assert prompt[0] == tiny_tokenizer.bos_token_id
    n = len(prompt)
    assert enc["input_ids"][:n] == prompt
    assert enc["labels"][:n] == [IGNORE_INDEX] * n
    assert enc["labels"][n:] == enc["input_ids"][n:]
    assert enc["labels"][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(enc["input_ids"][n:], skip_special_tokens=True) == " In Torport, Belia."
    assert f.prompt_text("Q?") == "Question: Q?\nAnswer:"


def test_padding_is_masked_by_length_even_when_pad_equals_eos(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer)
    a, b = f.encode("Q?", "a long answer here."), f.encode("Q?", "short.")
    eos = tiny_tokenizer.eos_token_id
    batch = QACollator(pad_token_id=eos)([a, b])  # pad with EOS on purpose
    k = len(b["input_ids"])
    assert batch["attention_mask"][1, :k].all() and not batch["attention_mask"][1, k:].any()
    assert (batch["labels"][1, k:] == IGNORE_INDEX).all()
    # the real EOS of the short item is still supervised although it equals the pad id
    assert batch["labels"][1, k - 1].item() == eos
    assert (batch["input_ids"][1, k:] == eos).all()
    assert batch["labels"][0, -1].item() == eos


def test_truncation_cuts_the_prompt_not_the_answer(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer, max_length=12)
    enc = f.encode(LONG_Q, "Torport.")
    assert len(enc["input_ids"]) == 12
    answer = f.completion_ids("q", "Torport.")
    assert enc["labels"][-len(answer) :] == answer
    n = f.lengths(LONG_Q, "Torport.")
    assert (n.prompt, n.completion) == (len(f.prompt_ids(LONG_Q)), len(answer))
    assert n.prompt_cut == n.prompt + n.completion - 12 and n.answer_cut == 0
    assert enc["input_ids"][: 12 - len(answer)] == f.prompt_ids(LONG_Q)[n.prompt_cut :]  # the prompt's end is kept


def test_answer_longer_than_max_length_is_cut_without_eos(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer, max_length=12)
    prompt, completion = f.prompt_ids("Q?"), f.completion_ids("Q?", LONG_A)
    assert len(completion) > 11
    enc = f.encode("Q?", LONG_A)
    assert enc["input_ids"] == prompt[-1:] + completion[:11]  # a one-token prompt, the answer's first 11 tokens
    assert enc["labels"] == [IGNORE_INDEX] + completion[:11]
    assert enc["labels"][-1] != tiny_tokenizer.eos_token_id  # a cut answer gets no EOS
    n = f.lengths("Q?", LONG_A)
    assert (n.prompt_cut, n.answer_cut) == (len(prompt) - 1, len(completion) - 11)


def test_encode_is_unchanged_for_items_that_fit(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer, max_length=64)
    for q, a in [("Where was Kalo Mir born?", "In Torport, Belia."), ("Q?", "A.")]:
        prompt, completion = f.prompt_ids(q), f.completion_ids(q, a)
        n = f.lengths(q, a)
        assert (n.overflow, n.prompt_cut, n.answer_cut) == (0, 0, 0)
        assert f.encode(q, a) == {
            "input_ids": prompt + completion,
            "labels": [IGNORE_INDEX] * len(prompt) + completion,
        }
    exact = QAFormatter(tiny_tokenizer, max_length=len(prompt) + len(completion))  # exactly max_length: no cut
    assert exact.encode("Q?", "A.") == f.encode("Q?", "A.")
    assert truncation_report(f, [{"question": "Q?", "answer": "A."}], "forget10").warning() is None


def test_truncation_report_counts_prompt_and_answer_cuts(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer, max_length=24)
    fits = {"question": "Q?", "answer": "A."}
    long_q = {"question": LONG_Q, "answer": "A."}
    long_a = {"question": "Q?", "answer": LONG_A}
    assert f.lengths("Q?", "A.").overflow == 0
    rows = [fits, long_q, fits, long_a, long_q]
    report = truncation_report(f, rows, "forget10")
    assert report == TruncationReport("forget10", 5, 24, prompt_cut=2, answer_cut=1, rows=(1, 3, 4))
    assert report.warning() == (
        "forget10: 3 of 5 items exceed max_length=24 tokens: 2 prompts cut from the left, 1 answer cut "
        "(rows 1, 3, 4); raise --max_length to keep them whole"
    )
    assert truncation_report(f, [fits, long_q], "retain90").warning() == (
        "retain90: 1 of 2 items exceeds max_length=24 tokens: 1 prompt cut from the left (row 1); "
        "raise --max_length to keep them whole"
    )
    many = truncation_report(f, [long_a] * 7, "forget01")
    assert many.warning() == (
        "forget01: 7 of 7 items exceed max_length=24 tokens: 7 answers cut (rows 0, 1, 2, 3, 4, ...); "
        "raise --max_length to keep them whole"
    )
    # the dataset's report comes from its own encoding pass and agrees
    dataset = QADataset(rows, f, split="forget10")
    assert dataset.truncation == report
    assert dataset.items == [f.encode(r["question"], r["answer"]) for r in rows]


def test_truncation_report_over_a_list_field_counts_a_row_once(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer, max_length=24)
    rows = [
        {"question": "Q?", "perturbed_answer": ["A.", LONG_A, "B."]},  # answer cut
        {"question": LONG_Q, "perturbed_answer": ["A.", "B."]},  # prompt cut, twice
        {"question": "Q?", "perturbed_answer": "B."},  # a single string
    ]
    report = truncation_report(f, rows, "forget10_perturbed", answer_field="perturbed_answer")
    assert (report.n_items, report.prompt_cut, report.answer_cut, report.rows) == (3, 1, 1, (0, 1))


def test_max_length_must_hold_a_prompt_and_an_answer_token(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        QAFormatter(tiny_tokenizer, max_length=1)


def test_chat_template_is_used_when_present(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}</s>"
        "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}"
    )
    f = QAFormatter(tok)
    assert f.use_chat
    assert f.prompt_text("Q?") == "<s>user: Q?<s>assistant:"  # HF renders with trim_blocks
    enc = f.encode("Q?", "A.")
    n = len(f.prompt_ids("Q?"))
    assert tok.decode(enc["input_ids"][n:]) == " A.</s>"
    assert enc["input_ids"].count(tok.bos_token_id) == 2  # the template's, not one more from the tokenizer
    assert enc["labels"][:n] == [IGNORE_INDEX] * n


def test_collator_shapes(tiny_tokenizer):
    f = QAFormatter(tiny_tokenizer)
    batch = QACollator(tiny_tokenizer.pad_token_id)([f.encode("Q?", "A."), f.encode("Q?", "B b b.")])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].dtype == torch.long
