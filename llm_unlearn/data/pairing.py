"""Forget/retain pairing for unlearning: a seeded sampler, a paired dataset and a nested collator.

An epoch walks the forget side once. The sampler yields ``(forget_index, retain_index, draw)`` triples:
- the forget order is a permutation seeded by ``(seed, epoch)``, identical on every rank, so that Accelerate's
  batch sharding splits the forget set between ranks without duplicates;
- the retain partners and the ``draw`` (which picks one of several variants, e.g. a perturbed answer) come from a
  generator seeded by ``(seed, epoch, rank)``: deterministic, different on every rank, identical after a resume.
No global RNG is touched in ``__getitem__``.
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
    """Yields ``(forget_index, retain_index, draw)`` for one epoch; call ``set_epoch`` between epochs."""

    def __init__(self, n_forget: int, n_retain: int, seed: int, rank: int = 0):
        if n_forget < 1:
            raise ValueError("the forget side is empty")
        self.n_forget, self.n_retain, self.seed, self.rank = n_forget, n_retain, seed, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_forget

    def triples(self) -> list[tuple[int, int, int]]:
        order = torch.randperm(self.n_forget, generator=seeded_generator(self.seed, self.epoch)).tolist()
        g = seeded_generator(self.seed, self.epoch, self.rank + 1)
        if self.n_retain:
            reps = -(-self.n_forget // self.n_retain)
            retain = torch.cat([torch.randperm(self.n_retain, generator=g) for _ in range(reps)])[: self.n_forget]
        else:
            retain = torch.full((self.n_forget,), -1)
        draws = torch.randint(0, 2**31 - 1, (self.n_forget,), generator=g)
        return list(zip(order, retain.tolist(), draws.tolist()))

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
