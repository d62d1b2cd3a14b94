"""QA formatting and tokenization shared by training and evaluation.

A QA item becomes ``prompt + completion``: prompt tokens are labelled -100, completion tokens are supervised.
With a chat template the prompt is the user turn plus the generation prompt and the completion is the rest of the
rendered conversation; without one the prompt is ``Question: {q}\\nAnswer:`` and the completion ``" {a}"`` followed
by EOS. Padding is masked by sequence length (the attention mask), never by token id, so a real EOS that equals the
pad token stays supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


class QAFormatter:
    """Turns (question, answer) pairs into token ids and labels for one tokenizer."""

    def __init__(self, tokenizer, max_length: int = 256):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_chat = bool(getattr(tokenizer, "chat_template", None))

    def prompt_text(self, question: str) -> str:
        if self.use_chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return f"Question: {question}\nAnswer:"

    def completion_text(self, question: str, answer: str) -> str:
        if self.use_chat:
            prompt = self.prompt_text(question)
            full = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
            )
            if not full.startswith(prompt):  # templates that rewrite earlier turns: fall back to the raw answer
                return answer
            return full[len(prompt) :].rstrip("\n")
        return " " + answer

    def prompt_ids(self, question: str) -> list[int]:
        # A chat template writes its own BOS; a plain prompt gets the tokenizer's special tokens (BOS).
        return self.tokenizer(self.prompt_text(question), add_special_tokens=not self.use_chat)["input_ids"]

    def completion_ids(self, question: str, answer: str) -> list[int]:
        ids = self.tokenizer(self.completion_text(question, answer), add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        return ids

    def encode(self, question: str, answer: str) -> dict[str, list[int]]:
        """Token ids and labels of one QA pair; truncation cuts the prompt's start, never the answer."""
        prompt = self.prompt_ids(question)
        completion = self.completion_ids(question, answer)
        overflow = len(prompt) + len(completion) - self.max_length
        if overflow > 0:
            if overflow >= len(prompt):
                completion = completion[: self.max_length - 1]
                prompt = prompt[-1:]
            else:
                prompt = prompt[overflow:]
        return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}


@dataclass
class QACollator:
    """Right-pads a list of encoded items; padding is masked by length in both attention mask and labels."""

    pad_token_id: int

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        # Extra per-position fields (e.g. the hybrid inputs of correct-label injection) are padded alike:
        # integer ids with the pad id, floats with 0.
        extra = {}
        for key in features[0]:
            if key in ("input_ids", "labels"):
                continue
            is_float = isinstance(features[0][key][0], float)
            extra[key] = torch.full(
                (n, width), 0.0 if is_float else self.pad_token_id, dtype=torch.float32 if is_float else torch.long
            )
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.tensor(f["input_ids"])
            labels[i, :k] = torch.tensor(f["labels"])
            attention[i, :k] = 1
            for key, tensor in extra.items():
                tensor[i, :k] = torch.tensor(f[key])
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, **extra}


class QADataset(torch.utils.data.Dataset):
    """Encoded QA items for the Trainer (encoding happens once, up front)."""

    def __init__(self, rows: Sequence[dict], formatter: QAFormatter, answer_field: str = "answer"):
        self.items = [formatter.encode(r["question"], r[answer_field]) for r in rows]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]
