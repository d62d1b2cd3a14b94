"""QA formatting: prompt masked, answer supervised, padding masked by length."""

import torch

from llm_unlearn.data.formatting import IGNORE_INDEX, QACollator, QAFormatter


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
    enc = f.encode("What is " + "very " * 30 + "long?", "Torport.")
    assert len(enc["input_ids"]) == 12
    answer = f.completion_ids("q", "Torport.")
    assert enc["labels"][-len(answer) :] == answer


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
