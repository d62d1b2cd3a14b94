"""QA formatting and tokenization shared by training and evaluation.

A QA item becomes ``prompt + completion``: prompt tokens are labelled -100, completion tokens are supervised.
With a chat template the prompt is the user turn plus the generation prompt and the completion is the rest of the
rendered conversation; without one the prompt is ``Question: {q}\\nAnswer:`` and the completion ``" {a}"`` followed
by EOS. Padding is masked by sequence length (the attention mask), never by token id, so a real EOS that equals the
pad token stays supervised.

Truncation to ``max_length`` tokens is explicit and reported, never silent: the prompt's start is cut first (the
answer stays whole); only if even a one-token prompt cannot hold the whole completion is the completion cut at its
end, and then it keeps no EOS (see :meth:`QAFormatter.encode`). :func:`truncation_report` counts both cases for a
split, with the same length computation as the encoder, and :meth:`TruncationReport.warning` words it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .schema import CHAT_DATE

IGNORE_INDEX = -100


class QAFormatter:
    """Turns (question, answer) pairs into token ids and labels for one tokenizer."""

    def __init__(
        self,
        tokenizer,
        max_length: int = 256,
        shots: Sequence[tuple[str, str]] = (),
        chat_date: str = CHAT_DATE,
        system_prompt: str | None = None,
    ):
        """``shots``: (question, answer) pairs put before every question as earlier turns of the conversation (the
        few-shot probes of ``llm-unlearn attack``); none by default. ``chat_date``: the date a chat template may
        render (never today's); ``system_prompt``: a system turn before the conversation (default: none, so the
        template's own default system turn, if any)."""
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (one prompt and one answer token), got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_chat = bool(getattr(tokenizer, "chat_template", None))
        self.shots = tuple((str(q), str(a)) for q, a in shots)
        self.chat_date = chat_date
        self.system_prompt = system_prompt

    def _turns(self, question: str) -> list[dict]:
        turns = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        for q, a in self.shots:
            turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return turns + [{"role": "user", "content": question}]

    def _render(self, turns: list[dict], **kwargs) -> str:
        # date_string reaches the template as a variable: templates that write a date use it instead of today's
        return self.tokenizer.apply_chat_template(turns, tokenize=False, date_string=self.chat_date, **kwargs)

    def prompt_format(self) -> str:
        """The rendered prompt and completion of a placeholder item: what an evaluation's cache key must follow
        (a template or setting that changes prompts changes it)."""
        return self.prompt_text("{question}") + "\u241e" + self.completion_text("{question}", "{answer}")

    def prompt_text(self, question: str) -> str:
        if self.use_chat:
            return self._render(self._turns(question), add_generation_prompt=True)
        context = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in self.shots)
        return f"{context}Question: {question}\nAnswer:"

    def completion_text(self, question: str, answer: str) -> str:
        if self.use_chat:
            prompt = self.prompt_text(question)
            full = self._render([*self._turns(question), {"role": "assistant", "content": answer}])
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

    def lengths(self, question: str, answer: str) -> QALengths:
        """Token counts of one QA pair before truncation, and how :meth:`encode` will truncate it."""
        return QALengths(len(self.prompt_ids(question)), len(self.completion_ids(question, answer)), self.max_length)

    def encode(self, question: str, answer: str) -> dict[str, list[int]]:
        """Token ids and labels of one QA pair, at most ``max_length`` tokens.

        Truncation (computed by :class:`QALengths`, shared with :func:`truncation_report`): the prompt's start is
        cut first, so the answer stays whole. If even a one-token prompt (its last token) cannot hold the whole
        completion, the completion is cut at its end to ``max_length - 1`` tokens and keeps no EOS: putting an EOS
        after a cut answer would teach (or, in evaluation, score) the model to stop mid-answer, and an answer
        prefix without EOS is at least a true prefix. Such items are counted as "answer cut" by
        :func:`truncation_report`, whose warning the commands print.
        """
        return self.encode_with_lengths(question, answer)[0]

    def encode_with_lengths(self, question: str, answer: str) -> tuple[dict[str, list[int]], QALengths]:
        """:meth:`encode` and the pair's :class:`QALengths` from the same tokenization (for reports while encoding)."""
        prompt = self.prompt_ids(question)
        completion = self.completion_ids(question, answer)
        n = QALengths(len(prompt), len(completion), self.max_length)
        prompt = prompt[n.prompt_cut :]
        completion = completion[: len(completion) - n.answer_cut]
        return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}, n


@dataclass(frozen=True)
class QALengths:
    """Token counts of one QA pair (prompt, completion with its EOS) and how they fit ``max_length``."""

    prompt: int
    completion: int
    max_length: int

    @property
    def overflow(self) -> int:
        """Tokens over ``max_length`` (0 when the pair fits)."""
        return max(0, self.prompt + self.completion - self.max_length)

    @property
    def prompt_cut(self) -> int:
        """Tokens cut from the prompt's start: the overflow, but at least one prompt token stays."""
        return min(self.overflow, max(0, self.prompt - 1))

    @property
    def answer_cut(self) -> int:
        """Tokens cut from the completion's end (its EOS first): what a one-token prompt still cannot hold."""
        return self.overflow - self.prompt_cut


MAX_REPORTED_ROWS = 5


@dataclass(frozen=True)
class TruncationReport:
    """How many items of a split exceed ``max_length``: ``prompt_cut`` items lose only the start of their
    prompt, ``answer_cut`` items also lose the end of their answer (and its EOS). ``rows`` holds the first few
    indices of the items cut (either way), ``n_items`` the split's size."""

    split: str
    n_items: int
    max_length: int
    prompt_cut: int = 0
    answer_cut: int = 0
    rows: tuple[int, ...] = ()

    @property
    def n_cut(self) -> int:
        return self.prompt_cut + self.answer_cut

    @classmethod
    def from_lengths(cls, split: str, max_length: int, lengths: Sequence[Sequence[QALengths]]) -> TruncationReport:
        """A report from the lengths of each row's pair(s); a row with several answers counts once, as its worst
        pair (answer cut before prompt cut)."""
        prompt_cut = answer_cut = 0
        rows = []
        for i, pairs in enumerate(lengths):
            if any(n.answer_cut for n in pairs):
                answer_cut += 1
            elif any(n.prompt_cut for n in pairs):
                prompt_cut += 1
            else:
                continue
            if len(rows) < MAX_REPORTED_ROWS:
                rows.append(i)
        return cls(split, len(lengths), max_length, prompt_cut, answer_cut, tuple(rows))

    def warning(self) -> str | None:
        """One line for the log, or ``None`` when every item fits, e.g. ``forget10: 3 of 40 items exceed
        max_length=128 tokens: 2 prompts cut from the left, 1 answer cut (rows 4, 17, 31); raise --max_length to
        keep them whole``."""
        if not self.n_cut:
            return None
        plural = lambda k, word: f"{k} {word}" + ("s" if k != 1 else "")  # noqa: E731
        parts = []
        if self.prompt_cut:
            parts.append(f"{plural(self.prompt_cut, 'prompt')} cut from the left")
        if self.answer_cut:
            parts.append(f"{plural(self.answer_cut, 'answer')} cut")
        rows = ", ".join(map(str, self.rows)) + (", ..." if self.n_cut > len(self.rows) else "")
        verb = "exceeds" if self.n_cut == 1 else "exceed"
        return (
            f"{self.split}: {self.n_cut} of {plural(self.n_items, 'item')} {verb} max_length={self.max_length} "
            f"tokens: {', '.join(parts)} ({'row' if self.n_cut == 1 else 'rows'} {rows}); "
            "raise --max_length to keep them whole"
        )


def _answers(row: Mapping, answer_field: str) -> list[str]:
    value = row[answer_field]
    return [value] if isinstance(value, str) else list(value)


def truncation_report(
    formatter: QAFormatter, rows: Sequence[Mapping], split: str, answer_field: str = "answer"
) -> TruncationReport:
    """Count the items of ``rows`` that :meth:`QAFormatter.encode` would truncate (tokenizer only, no model).

    ``answer_field`` may name a list field such as ``perturbed_answer``: a row then counts once, as its worst pair.
    """
    lengths = [[formatter.lengths(r["question"], a) for a in _answers(r, answer_field)] for r in rows]
    return TruncationReport.from_lengths(split, formatter.max_length, lengths)


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

    def __init__(
        self, rows: Sequence[dict], formatter: QAFormatter, answer_field: str = "answer", split: str = "data"
    ):
        encoded = [formatter.encode_with_lengths(r["question"], r[answer_field]) for r in rows]
        self.items = [item for item, _ in encoded]
        # the truncation counts of this same encoding pass (no second tokenization): print its ``warning()``
        self.truncation = TruncationReport.from_lengths(split, formatter.max_length, [[n] for _, n in encoded])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]
