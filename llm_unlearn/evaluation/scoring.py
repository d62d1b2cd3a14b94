"""The scoring core: one batched teacher-forced pass per (model, split, answer variant), and batched generation.

Every probability-based metric (probability, truth ratio, membership-inference scores, memorization) derives from
the per-token arrays returned here, so nothing is computed twice.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.formatting import IGNORE_INDEX, QACollator, QAFormatter

logger = logging.getLogger(__name__)


@dataclass
class TokenScores:
    """Per answer token of one (question, answer) pair.

    Attributes:
        logprobs: ``log p(y_t | x, y_<t)``.
        argmax_match: whether the teacher-forced argmax equals the label.
        mu: ``E_{z~p_t}[log p_t(z)]``, the expected log-prob under the model's next-token distribution.
        sigma: the standard deviation of ``log p_t(z)`` under ``z ~ p_t``. (``mu``/``sigma`` serve Min-K%++.)
    """

    logprobs: np.ndarray
    argmax_match: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    @property
    def length(self) -> int:
        return len(self.logprobs)

    @property
    def avg_loss(self) -> float:
        """``ℓ(y) = −(1/|y|) Σ_t log p(y_t | x, y_<t)``."""
        return float(-self.logprobs.mean())


def _batches(order: Sequence[int], size: int, desc: str | None = None):
    """Consecutive slices of ``order``; with ``desc``, behind a progress bar (long evaluations take minutes)."""
    starts = range(0, len(order), size)
    if desc is not None:
        from tqdm.auto import tqdm

        # leave=False: the bar goes away under the evaluator's per-split bar; disable=None: hidden when not a tty
        starts = tqdm(starts, desc=desc, unit="batch", leave=False, disable=True if len(starts) <= 1 else None)
    for i in starts:
        yield order[i : i + size]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


# --- bounded scoring ------------------------------------------------------------------------------------------------
#
# The vocabulary-sized arrays are what grows: batch x length x vocab fp32 logits are 4.2 GB for 32 x 256 tokens of a
# 128k vocabulary, and log-softmax and probabilities copy them. Only the answer positions are projected to the
# vocabulary, a chunk at a time, so what scoring holds beside the model is set by ``max_memory``, not by the batch.

DEFAULT_MAX_SCORING_MEMORY = 1 << 30  # 1 GiB
# Vocabulary-sized fp32 arrays alive at once per position in `_token_stats`: the logits and their log-softmax, then
# the log-softmax and the probabilities. A model-dtype head output cast to fp32 is 1.5 of them at most, and is gone
# before the log-softmax.
VOCAB_TEMPORARIES = 2
# The share of the bound kept for what lives beside the vocabulary arrays: the decoder's activations, which the CPU
# allocator keeps resident after the body has run, the gathered hidden states (positions x hidden, far smaller than
# x vocabulary), per-position results. With 1/8, the 128k-vocabulary model of eval/bench_eval.py (32 x 256 tokens)
# peaked at 276 MiB under a 256 MiB bound. The decoder's own peak is set by the batch size, not by this bound.
HEADROOM = 1 / 4
PROBE_TOKENS = 16

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12}
_UNITS.update({"tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_memory_size(value: int | str, name: str = "--max_scoring_memory") -> int:
    """Bytes from an int or a size such as ``"512MB"``, ``"1.5GiB"`` or ``"1073741824"`` (KB/MB/GB are powers of
    1000, KiB/MiB/GiB powers of 1024, as ``accelerate``'s ``max_memory`` reads them)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{name} must be a number of bytes or a size such as 512MB or 2GiB, got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if match is None:
            raise ValueError(f"{name} {value!r} is not a size: write bytes or a number and a unit, e.g. 512MB or 2GiB")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _UNITS:
            raise ValueError(
                f"{name} {value!r} has an unknown unit {match.group(2)!r}: use B, KB, MB, GB, TB (powers of 1000) "
                "or KiB, MiB, GiB, TiB (powers of 1024)"
            )
    size = int(number * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{name} {value!r} is not positive: give the memory scoring may use, e.g. 1GiB")
    return size


def format_size(n: int) -> str:
    """``1.5 GiB``, ``512.0 MiB``, ``3.1 KiB`` or ``100 B``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def positions_per_chunk(max_memory: int, vocab_size: int) -> int:
    """Answer positions projected to the vocabulary at once: :data:`VOCAB_TEMPORARIES` fp32 arrays of
    ``vocab_size`` per position fit in the bound less its :data:`HEADROOM`. Raises when not even one position fits,
    naming the smallest bound that works."""
    per_position = VOCAB_TEMPORARIES * vocab_size * 4
    budget = int(max_memory * (1 - HEADROOM))
    if budget < per_position:
        need = math.ceil(per_position / (1 - HEADROOM))
        raise ValueError(
            f"--max_scoring_memory {format_size(max_memory)} cannot hold one answer position's scoring arrays "
            f"({VOCAB_TEMPORARIES} x {vocab_size:,} vocabulary x 4 bytes, and {HEADROOM:.1%} headroom): raise it to "
            f"at least {format_size(need)} ({need} bytes)"
        )
    return budget // per_position


@dataclass
class ScoringRoute:
    """How logits reach the scoring statistics for one model.

    ``split``: the decoder body runs once per batch and the output head projects only the answer positions' hidden
    states, a chunk at a time: the bound always holds. ``logits_to_keep``: the model's own forward, which applies
    its own post-processing (Gemma's soft-capping, a logit scale), given a boolean mask of the answer positions
    (the transformers 5 form) on sub-batches of rows whose answer positions fit the bound: it holds unless one row's
    answer alone exceeds it. ``full_logits``: the model's forward on sub-batches of rows sized to half the bound
    (at least one row), its answer positions then scored in chunks; a last resort that exceeds the bound when one
    row's full logits do.
    """

    kind: str
    vocab: int
    body: object = None
    head: object = None
    reason: str = ""


def _base_of(model):
    """The transformers model under a PEFT wrapper; ``None`` for prompt-learning adapters, whose forward adds
    virtual tokens that the decoder body alone would not see."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None:
        return model
    if getattr(peft_config, "is_prompt_learning", False):
        return None
    return model.get_base_model()


def _post_head_softcap(model) -> str | None:
    """A config entry that soft-caps the logits after the head (``final_logit_softcapping`` of Gemma 2/3, ...).
    A probe with a random or small model may sit in the cap's near-linear range, so it is checked by name too."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, value in text.to_dict().items():
        if "softcap" in key and "attn" not in key and value:
            return f"{key}={value}"
    return None


def _decoder_and_head(model):
    """(body, head) when the model is a plain decoder body followed by an output projection, else a reason."""
    base = _base_of(model)
    if base is None:
        return "a prompt-learning adapter adds virtual tokens in its own forward"
    softcap = _post_head_softcap(base)
    if softcap:
        return f"its logits are soft-capped after the head ({softcap})"
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    body = get_decoder() if get_decoder is not None else None
    if body is None or head is None or body is base:
        return "it has no separate decoder body and output head"
    return body, head


def _last_hidden(output) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


# The route of each model object, probed once: an evaluation scores every split and answer variant with the same
# model, and the route follows the model's structure, not its inputs.
_ROUTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _route_of(model, probe_ids: Sequence[int]) -> ScoringRoute:
    route = _ROUTES.get(model)
    if route is None:
        route = _ROUTES[model] = scoring_route(model, probe_ids)
    return route


@torch.no_grad()
def scoring_route(model, probe_ids: Sequence[int]) -> ScoringRoute:
    """The cheapest route whose logits equal the model's own on a probe (the first :data:`PROBE_TOKENS` of
    ``probe_ids``, one row): the split when it reproduces them, else the model's forward with ``logits_to_keep``,
    else full logits. Checking numbers rather than class names covers wrappers, remote code and heads that
    rescale or slice their logits."""
    device = model_device(model)
    ids = torch.tensor([list(probe_ids[:PROBE_TOKENS])], device=device)
    attn = torch.ones_like(ids)
    reference = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, -ids.shape[1] :]
    dtype, reference = reference.dtype, reference.float()
    vocab = reference.shape[-1]  # the logits' own width (a head may pad or slice the vocabulary)
    split = _decoder_and_head(model)
    if isinstance(split, tuple):
        body, head = split
        logits = head(_last_hidden(body(input_ids=ids, attention_mask=attn, use_cache=False))).float()
        if logits.shape == reference.shape and torch.allclose(logits, reference, rtol=1e-5, atol=1e-5):
            return ScoringRoute("split", vocab, body, head)
        reason = "its logits are not its output head applied to its decoder's hidden states"
    else:
        reason = split
    if _accepts(model, "logits_to_keep"):
        keep = torch.ones_like(ids, dtype=torch.bool)
        keep[0, 0] = False  # fewer kept than all positions: the output's shape shows the mask was honoured
        try:
            kept = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=keep).logits.float()
        except (IndexError, RuntimeError, TypeError, ValueError):  # an older slicing that takes no mask
            kept = None
        # the same forward on fewer positions: only the head's matrix shape differs, so one rounding step of the
        # model's dtype apart at most (a mask read as positions would give other logits altogether)
        tol = max(1e-5, 4 * torch.finfo(dtype).eps)
        if kept is not None and kept.shape == reference[keep].shape:
            if torch.allclose(kept, reference[keep], rtol=tol, atol=tol):
                return ScoringRoute("logits_to_keep", vocab, reason=reason)
    return ScoringRoute("full_logits", vocab, reason=reason)


def _token_stats(project, inputs, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Log-prob of the label, argmax match, and the Min-K%++ moments ``mu``/``sigma`` of ``log p`` under ``p`` for
    the positions whose logits ``project(inputs)`` returns (called here, so no caller holds its result).

    At most :data:`VOCAB_TEMPORARIES` vocabulary-sized fp32 arrays per position are alive at once (while a plain
    head runs; a LoRA adapter on the head itself adds its own output for that moment): the sums over
    the vocabulary are dot products (``einsum``, no product array), and the variance reuses the log-softmax in
    place as ``(log p - mu)^2``. Centring first also keeps ``sigma`` exact for near-flat distributions, where
    ``E[(log p)^2] - mu^2`` cancels to a few digits in fp32.
    """
    logits = project(inputs)
    if logits.dtype != torch.float32:
        logits = logits.float()  # the model-dtype copy is freed here
    match = logits.argmax(-1) == labels
    logp = torch.log_softmax(logits, dim=-1)
    del logits
    token_lp = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    probs = logp.exp()
    mu = torch.einsum("nv,nv->n", probs, logp)
    centred = logp.sub_(mu.unsqueeze(-1)).square_()  # the log-softmax is not needed any more
    sigma = torch.einsum("nv,nv->n", probs, centred).clamp(min=0).sqrt()
    return token_lp, match, mu, sigma


def _concat(parts: list[tuple[torch.Tensor, ...]], device) -> list[torch.Tensor]:
    if not parts:  # a batch without supervised tokens
        empty = torch.zeros(0, device=device)
        return [empty, empty.bool(), empty, empty]
    return [torch.cat(p) for p in zip(*parts)]


def _split_stats(route: ScoringRoute, batch: dict, mask: torch.Tensor, labels: torch.Tensor, max_memory: int, vocab):
    """The decoder body once; the head on the supervised positions' hidden states, ``positions_per_chunk`` at a
    time. The body's own hidden states (batch x length x hidden) are not bounded here: hidden is far smaller than
    the vocabulary, and the batch size sets them."""
    hidden = _last_hidden(
        route.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    )
    states = hidden[:, :-1][mask]  # position t predicts token t + 1
    del hidden
    head_weight = getattr(route.head, "weight", None)
    if head_weight is not None and states.device != head_weight.device:  # a model split over devices
        states = states.to(head_weight.device)
    targets = labels[mask].to(states.device)
    n = positions_per_chunk(max_memory, vocab)
    parts = [_token_stats(route.head, states[s : s + n], targets[s : s + n]) for s in range(0, len(targets), n)]
    return _concat(parts, states.device)


def _row_groups(costs: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive rows grouped while their summed cost stays within ``limit`` (a row over it goes alone)."""
    groups: list[list[int]] = []
    total = 0
    for row, cost in enumerate(costs):
        if groups and total + cost <= limit:
            groups[-1].append(row)
            total += cost
        else:
            groups.append([row])
            total = cost
    return groups


def _fp32_rows(max_memory: int, vocab: int) -> int:
    """Vocabulary-sized fp32 arrays (one position each) that the bound holds, less its headroom."""
    return int(max_memory * (1 - HEADROOM)) // (vocab * 4)


def _rows_per_forward(kind: str, max_memory: int, vocab: int, width: int) -> int:
    """``logits_to_keep``: answer positions per forward (row groups are filled up to it); ``full_logits``: rows per
    forward, their full logits (and one post-processing copy) in half the bound, the chunked statistics in the
    other half. At least 1: a row over it still runs, alone."""
    fits = _fp32_rows(max_memory, vocab)
    if kind == "logits_to_keep":
        return max(1, fits // VOCAB_TEMPORARIES)
    return max(1, (fits // 2) // (2 * width))


def _warn_over_bound(kind: str, encoded: Sequence[dict], max_memory: int, vocab: int) -> None:
    fits = _fp32_rows(max_memory, vocab)
    if kind == "logits_to_keep":
        longest = max(sum(y != IGNORE_INDEX for y in e["labels"][1:]) for e in encoded)
        over = longest * VOCAB_TEMPORARIES > fits
        what = f"the longest answer ({longest} positions) alone exceeds"
    else:
        longest = max(len(e["input_ids"]) for e in encoded)
        over = 4 * longest > fits
        what = f"the full logits of the longest item ({longest} positions) alone exceed"
    if over:
        logger.warning(
            "scoring: %s --max_scoring_memory %s on this model's %s route: such rows are scored one at a time, "
            "over the bound",
            what,
            format_size(max_memory),
            kind,
        )


def _forward_stats(model, kind: str, batch: dict, mask: torch.Tensor, labels, max_memory: int, vocab: int):
    """The model's own forward on groups of rows (``logits_to_keep`` or ``full_logits`` routes)."""
    width = batch["input_ids"].shape[1]
    limit = _rows_per_forward(kind, max_memory, vocab, width)
    costs = mask.sum(1).tolist() if kind == "logits_to_keep" else [1] * len(mask)
    parts = []
    for rows in _row_groups(costs, limit):
        sub = {k: batch[k][rows] for k in ("input_ids", "attention_mask")}
        sub_mask, sub_labels = mask[rows], labels[rows]
        if kind == "logits_to_keep":
            keep = torch.zeros_like(sub["input_ids"], dtype=torch.bool)
            keep[:, :-1] = sub_mask  # position t predicts token t + 1

            def project(keep, sub=sub):
                return model(**sub, use_cache=False, logits_to_keep=keep).logits

            parts.append(_token_stats(project, keep, sub_labels[sub_mask]))
            continue
        logits = model(**sub, use_cache=False).logits[:, -width:][:, :-1]  # prompt tuning prepends virtual tokens
        ri, ci = sub_mask.nonzero(as_tuple=True)
        n = max(1, _fp32_rows(max_memory, vocab) // 4)
        for s in range(0, len(ri), n):
            at = (ri[s : s + n], ci[s : s + n])
            parts.append(_token_stats(logits.__getitem__, at, sub_labels[at]))
        del logits
    return _concat(parts, mask.device)


@torch.no_grad()
def score_encoded(
    model,
    encoded: Sequence[dict],
    pad_token_id: int,
    batch_size: int = 32,
    max_memory: int = DEFAULT_MAX_SCORING_MEMORY,
) -> list[TokenScores]:
    """Scores of the supervised tokens (``labels != -100``) of encoded items (QA pairs or text chunks), in input
    order. Items are sorted by length so batches carry little padding; padding is masked by length.

    Memory: only the supervised positions are projected to the vocabulary, in chunks sized so that their
    vocabulary-sized arrays stay within ``max_memory`` bytes (see :class:`ScoringRoute` for models whose logits
    are not a plain head over the decoder, where the bound holds as far as rows allow). The decoder body's
    activations and hidden states (batch x length x hidden, far smaller than x vocabulary) are set by
    ``batch_size``. ``logits_to_keep`` alone would not do: its mask gives all answer positions of a batch at once,
    and chunking it would run the body again per chunk.
    """
    if not encoded:
        return []
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    route = _route_of(model, encoded[order[-1]]["input_ids"])
    vocab = route.vocab
    positions_per_chunk(max_memory, vocab)  # a bound too small for one position fails before any batch runs
    if route.kind != "split":
        logger.info("scoring through the model's forward (%s): %s", route.kind, route.reason)
        _warn_over_bound(route.kind, encoded, max_memory, vocab)
    collate = QACollator(pad_token_id)
    device = model_device(model)
    out: list[TokenScores | None] = [None] * len(encoded)
    for idx in _batches(order, batch_size, desc=f"scoring {len(order)} items (teacher-forced)"):
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx]).items()}
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        if route.kind == "split":
            stats = _split_stats(route, batch, mask, labels, max_memory, vocab)
        else:
            stats = _forward_stats(model, route.kind, batch, mask, labels, max_memory, vocab)
        token_lp, match, mu, sigma = (t.cpu().numpy() for t in stats)
        cuts = np.cumsum(mask.sum(1).tolist())[:-1]
        rows = zip(*(np.split(a, cuts) for a in (token_lp, match, mu, sigma)))
        for i, (lp, m, u, sd) in zip(idx, rows):
            out[i] = TokenScores(logprobs=lp, argmax_match=m, mu=u, sigma=sd)
    return out  # type: ignore[return-value]


def score_answers(
    model,
    formatter: QAFormatter,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 32,
    max_memory: int = DEFAULT_MAX_SCORING_MEMORY,
) -> list[TokenScores]:
    """Teacher-forced answer-token scores of each (question, answer) pair, in input order (see
    :func:`score_encoded` for ``max_memory``)."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    encoded = [formatter.encode(q, a) for q, a in zip(questions, answers)]
    return score_encoded(model, encoded, formatter.tokenizer.pad_token_id, batch_size, max_memory)


def truncate_generation(text: str, stop: str = "\n\n") -> str:
    """Cut a generation at the first ``stop`` (default a blank line: TOFU answers are one paragraph)."""
    return text.split(stop, 1)[0].strip()


_TURN_MARKER = "LLMUNLEARNANSWERMARKER"  # one word: templates that trim or escape content leave it whole


def end_of_turn_token_id(tokenizer) -> int | None:
    """The special token that ends an assistant turn in the tokenizer's chat template (SmolLM2's ``<|im_end|>``,
    Llama 3's ``<|eot_id|>``), or ``None`` without a template or such a token.

    Found by rendering a one-turn conversation and taking the first special token after the assistant's content,
    so it needs no list of model families.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    from jinja2 import TemplateError

    turn = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _TURN_MARKER}]
    try:
        text = tokenizer.apply_chat_template(turn, tokenize=False)
    except (TemplateError, ValueError, TypeError, KeyError) as e:
        logger.warning("the chat template does not render a user and an assistant turn (%s): no end-of-turn stop", e)
        return None
    at = text.rfind(_TURN_MARKER)
    if at < 0:
        return None
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    tail = tokenizer(text[at + len(_TURN_MARKER) :], add_special_tokens=False)["input_ids"]
    return next((i for i in tail if i in special), None)


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends a generated answer: the tokenizer's EOS, the model's generation-config EOS ids and the
    chat template's end-of-turn token (an instruct model ends its turn there, and its EOS may be another token)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos, end_of_turn_token_id(tokenizer)):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def generate_answers(
    model, formatter: QAFormatter, questions: Sequence[str], max_new_tokens: int = 200, batch_size: int = 32
) -> list[str]:
    """Greedy answers, batched with left padding and the KV cache; each stops at EOS, at the chat template's
    end-of-turn token or at a blank line."""
    prompts = [formatter.prompt_ids(q) for q in questions]
    return generate_from_ids(model, formatter.tokenizer, prompts, max_new_tokens, batch_size, stop="\n\n")


@torch.no_grad()
def generate_from_ids(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 32,
    stop: str | None = "\n\n",
) -> list[str]:
    """Greedy continuations of tokenized prompts, batched with left padding and the KV cache. Each stops at a
    :func:`stop_token_ids` token and at the string ``stop`` (a blank line for one-paragraph answers, a newline for
    one-line answers; ``None``: only the stop tokens), which is cut off with what follows.

    A batch whose longest prompt leaves fewer than ``max_new_tokens`` positions in the model's context
    (``max_position_embeddings``) generates only up to the context's end, with a warning (past it, positions the
    model never trained on give text that means nothing); a prompt that fills the context is an error."""
    tok = tokenizer
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max((len(p) for p in prompts), default=0)
    if context is not None and longest >= context:
        raise ValueError(
            f"a prompt of {longest} tokens fills the model's context of {context} positions: nothing can be generated "
            "(use fewer or shorter few-shot examples, or a model with a longer context)"
        )
    if context is not None and longest + max_new_tokens > context:
        n_long = sum(len(p) + max_new_tokens > context for p in prompts)
        logger.warning(
            "%d of %d prompts (up to %d tokens) leave less than max_new_tokens=%d positions in the model's context of "
            "%d: their answers are generated only up to the context's end",
            n_long,
            len(prompts),
            longest,
            max_new_tokens,
            context,
        )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    device = model_device(model)
    out: list[str] = [""] * len(prompts)
    pad = tok.pad_token_id
    stopping = {"stop_strings": [stop], "tokenizer": tok} if stop else {}
    eos = stop_token_ids(tok, model)
    for idx in _batches(order, batch_size, desc=f"generating {len(order)} greedy answers"):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = prompts[i]
            ids[row, width - len(p) :] = torch.tensor(p)
            attn[row, width - len(p) :] = 1
        budget = max_new_tokens if context is None else min(max_new_tokens, context - width)
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
            **stopping,
        )
        for row, i in enumerate(idx):
            text = tok.decode(gen[row, width:], skip_special_tokens=True)
            out[i] = truncate_generation(text, stop) if stop else text.strip()
    return out


def gradient_norms(model, encoded: Sequence[dict], pad_token_id: int) -> list[float]:
    """GradNorm membership score input: ``‖∇_θ ℓ‖₂`` of each item's average loss over all trainable weights, one
    backward pass per item (costly: off by default). Gradients are cleared afterwards."""
    collate = QACollator(pad_token_id)
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    flags = [p.requires_grad for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    norms = []
    try:
        for item in encoded:
            batch = {k: v.to(device) for k, v in collate([item]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(
                logits[0, :-1].float(), batch["labels"][0, 1:], ignore_index=IGNORE_INDEX
            )  # the item's average loss ℓ over its supervised tokens
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms.append(float(torch.sqrt(sum(g.float().square().sum() for g in grads if g is not None))))
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    return norms
