"""Forget/retain pairing for unlearning: a seeded sampler, a paired dataset and a nested collator.

An epoch walks the forget side once, padded to whole optimizer steps. The sampler yields the GLOBAL stream of
``(forget_index, retain_index, draw)`` triples (``draw`` picks one of several variants, e.g. a perturbed answer):
- everything (the forget order, the retain partners, the draws) comes from local generators seeded by
  ``(seed, epoch)`` only: deterministic, identical on every rank, identical after a resume (the Trainer skips the
  batches already seen of the same stream). No global RNG is touched, here or in ``__getitem__``;
- sharding is left to Accelerate: with ``split_batches=False`` (the Trainer's default) its ``BatchSamplerShard``
  cuts the stream into micro-batches of ``per_device_train_batch_size`` and gives rank ``r`` of ``W`` the
  micro-batches ``r, r + W, r + 2W, ...``; gradient accumulation then takes consecutive micro-batches of a rank;
- the epoch length is rounded UP to a multiple of the global batch (``per_device_train_batch_size ×
  gradient_accumulation_steps × world_size``): the last partial global batch is filled with the first items of
  the same epoch's forget permutation (cycling when the global batch exceeds the forget set), each with its own
  retain partner and draw. Every optimizer step therefore sees one full global batch of ``G`` consecutive triples
  of the stream, the same ``G`` triples whatever the layout (1 process × 16, 1 × 8 × 2 accumulation, 2 processes
  × 8), split into equal micro-batches. Our losses are means over the sequences of a micro-batch and the Trainer
  divides each by the accumulation steps (DDP averages over ranks), so the step's gradient and logged loss are the
  mean over the same ``G`` sequences in every layout.

Why: this replaces the former per-rank seeding (retain partners and draws from ``(seed, epoch, rank)``, "different
on every rank"), which made the pairs, and so the loss curve, depend on the launch layout. Without the padding, a
short last global batch would also be cut differently per layout: Accelerate's ``even_batches`` pads a short
final micro-batch round with items from the start of the epoch on some ranks only, and accumulating a short tail
averages micro-batches of unequal sizes (a per-micro-batch mean, not a per-sequence one). The price: up to
``G - 1`` repeated forget items per epoch (in new pairs); a single process whose forget set is a multiple of ``G``
gets the same stream as rank 0 did before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .formatting import QACollator

_MIX = 1_000_003


def seeded_generator(*parts: int) -> torch.Generator:
    """A local generator seeded by a tuple of ints (no global RNG)."""
    seed = 0
    for p in parts:
        seed = (seed * _MIX + int(p) + 1) % (2**62)
    return torch.Generator().manual_seed(seed)


class PairSampler(torch.utils.data.Sampler):
    """Yields the global stream of ``(forget_index, retain_index, draw)`` for one epoch, ``len(self)`` triples:
    the forget set once, padded up to a multiple of ``global_batch``. Call ``set_epoch`` between epochs.

    Args:
        n_forget, n_retain: sizes of the two sides (``n_retain`` may be 0: the retain index is then -1).
        seed: the run's seed; with the epoch it fixes the whole stream (the same on every rank).
        global_batch: the triples of one optimizer step (``per_device_train_batch_size ×
            gradient_accumulation_steps × world_size``); 1 means no padding.
    """

    def __init__(self, n_forget: int, n_retain: int, seed: int, global_batch: int = 1):
        if n_forget < 1:
            raise ValueError("the forget side is empty")
        if global_batch < 1:
            raise ValueError(f"global_batch must be at least 1, got {global_batch}")
        self.n_forget, self.n_retain, self.seed, self.global_batch = n_forget, n_retain, seed, int(global_batch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.n_forget // self.global_batch) * self.global_batch

    def triples(self) -> list[tuple[int, int, int]]:
        n = len(self)
        order = torch.randperm(self.n_forget, generator=seeded_generator(self.seed, self.epoch)).tolist()
        forget = [order[i % self.n_forget] for i in range(n)]  # the padding repeats the epoch's first items
        g = seeded_generator(self.seed, self.epoch, 1)  # partners and draws: one generator for the global stream
        if self.n_retain:
            reps = -(-n // self.n_retain)
            retain = torch.cat([torch.randperm(self.n_retain, generator=g) for _ in range(reps)])[:n]
        else:
            retain = torch.full((n,), -1)
        draws = torch.randint(0, 2**31 - 1, (n,), generator=g)
        return list(zip(forget, retain.tolist(), draws.tolist()))

    def __iter__(self):
        return iter(self.triples())


class PairedDataset(torch.utils.data.Dataset):
    """Forget-side items (each a dict of named encodings; a list value holds alternatives picked by the draw) and
    retain items, combined by index triples from :class:`PairSampler`."""

    def __init__(self, forget: Sequence[dict], retain: Sequence[dict]):
        self.forget = list(forget)
        self.retain = list(retain)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, key) -> dict:
        if isinstance(key, int):  # plain index (e.g. a Trainer utility peeking at item 0)
            key = (key, key % len(self.retain) if self.retain else -1, 0)
        f, r, draw = key
        out = {}
        for name, value in self.forget[f].items():
            out[name] = value[draw % len(value)] if isinstance(value, list) else value
        if r >= 0:
            out["retain"] = self.retain[r]
        return out


class NestedCollator:
    """Pads each named side (``forget``, ``retain``, ``alt`` ...) separately: ``{side: {input_ids, attention_mask,
    labels}}``; padding is masked by length."""

    def __init__(self, pad_token_id: int):
        self.pad = QACollator(pad_token_id)

    def __call__(self, features: Sequence[dict]) -> dict[str, dict[str, torch.Tensor]]:
        return {name: self.pad([f[name] for f in features]) for name in features[0]}
