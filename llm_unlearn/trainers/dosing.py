"""Self-dosing unlearning: stop when the forget set looks like never-seen data, not after a fixed step count.

The right dose of unlearning differs by data set, split size and seed: a fixed learning rate and step count
under-unlearns on one benchmark and over-unlearns on the next. With ``--dose_every k`` every method is watched by
:class:`DoseCallback`: every ``k`` optimizer steps it scores, under the current weights (eval mode, no gradients),

- the forget items' answer losses (up to ``dose_items``, a seeded sample),
- the answer losses of never-seen items: the *dosing half* of the holdout split (:func:`holdout_halves`; the
  evaluation of such a run reports on the other half, so the stopping rule never sees what it is judged on),
- a retain probe (up to ``dose_items`` retain items): its mean answer probability,

and stops the run (``control.should_training_stop``) at the first check where

1. **retain guard**: the retain probe's mean probability fell below ``1 − dose_retain_guard`` of its value before
   training (utility is being lost), or
2. **over-unlearned**: the forget items became *less* likely than never-seen ones (median forget loss above the
   holdout's), or
3. **looks never-seen**: the two-sample KS test between forget and holdout losses gives ``p ≥ dose_tolerance``.

The trajectory (every check's numbers) and the stop reason go to the run's log history and record. A run that
reaches its ``max_steps`` first says so (``stop_reason: "max_steps"``): the budget is then an upper bound.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections.abc import Sequence

import torch
from transformers import TrainerCallback

from ..data.formatting import QACollator
from ..data.schema import holdout_halves  # noqa: F401 (where a run's holdout halves come from)
from . import losses as L

logger = logging.getLogger(__name__)


def _sample(rows: Sequence[dict], n: int, seed: int, tag: str) -> list[dict]:
    rows = list(rows)
    return rows if len(rows) <= n else random.Random(f"{tag}:{seed}").sample(rows, n)


class DoseCallback(TrainerCallback):
    """The stopping rule above; ``formatter`` encodes the probes, ``args`` is the run's config (``dose_*``)."""

    def __init__(self, args, formatter, forget_rows, retain_rows, holdout_rows):
        self.every = int(args.dose_every)
        self.tolerance = float(args.dose_tolerance)
        self.guard = float(args.dose_retain_guard)
        self.batch_size = int(args.per_device_train_batch_size)
        n, seed = int(args.dose_items), int(args.seed)
        self.collate = QACollator(formatter.tokenizer.pad_token_id)

        def encode(rows):
            return [formatter.encode(r["question"], r["answer"]) for r in rows]

        self.forget = encode(_sample(forget_rows, n, seed, "dose-forget"))
        self.holdout = encode(_sample(holdout_rows, n, seed, "dose-holdout"))
        self.retain = encode(_sample(retain_rows, n, seed, "dose-retain"))
        if len(self.forget) < 2 or len(self.holdout) < 2:
            raise ValueError(
                f"self-dosing needs at least 2 forget and 2 never-seen (holdout) items, got {len(self.forget)} and "
                f"{len(self.holdout)}: give a larger forget split or --dose_holdout_split, or leave --dose_every 0"
            )
        self.trajectory: list[dict] = []
        self.stop_reason: str | None = None
        self.stop_step: int | None = None
        self.retain_start: float | None = None

    # --- scoring ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _losses(self, model, encoded) -> list[float]:
        device = next(model.parameters()).device
        out: list[float] = []
        for i in range(0, len(encoded), self.batch_size):
            batch = {k: v.to(device) for k, v in self.collate(encoded[i : i + self.batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            out += L.sequence_nll(logits.float(), batch["labels"]).tolist()
        return out

    def measure(self, model) -> dict:
        """The numbers of one check under ``model``'s current weights."""
        from ..evaluation.metrics import forget_quality

        was_training = model.training
        model.eval()
        try:
            forget, holdout, retain = (self._losses(model, e) for e in (self.forget, self.holdout, self.retain))
        finally:
            model.train(was_training)
        return {
            "p": forget_quality(forget, holdout),  # the two-sample KS p-value of the answer losses
            "forget_loss": statistics.median(forget),
            "holdout_loss": statistics.median(holdout),
            "retain_probability": statistics.fmean(torch.tensor(retain).neg().exp().tolist()) if retain else None,
        }

    def decide(self, m: dict) -> str | None:
        """The stop reason for the numbers ``m`` of a check, or None to go on."""
        if m["retain_probability"] is not None and self.retain_start:
            ratio = m["retain_probability"] / self.retain_start
            m["retain_ratio"] = ratio
            if ratio < 1 - self.guard:
                return f"retain guard: the retain probe's mean probability fell to {ratio:.3f} of its start"
        if m["forget_loss"] > m["holdout_loss"]:
            return (
                f"over-unlearned: the forget answers became less likely than never-seen ones (median loss "
                f"{m['forget_loss']:.3g} > {m['holdout_loss']:.3g})"
            )
        if m["p"] >= self.tolerance:
            return f"looks never-seen: KS p {m['p']:.3g} >= dose_tolerance {self.tolerance:g} (forget vs holdout)"
        return None

    # --- the Trainer's events ----------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Before the first step: the numbers at step 0 (the retain guard's start), kept in the log history too, so
        that a run resumed from a checkpoint (whose ``trainer_state.json`` holds that history) continues the same
        trajectory against the same start instead of losing its guard."""
        if state.global_step > 0:
            self.trajectory = _trajectory_of(state.log_history)
            start = next((t for t in self.trajectory if t["step"] == 0), None)
            if start is None:
                raise ValueError(
                    "self-dosing: the checkpoint resumed from has no dosing history (it was saved by a run without "
                    "--dose_every, or with another one): resume with the settings of the run that saved it"
                )
            self.retain_start = start["retain_probability"]
            return
        m = self.measure(model)
        self.retain_start = m["retain_probability"]
        self._log(state, 0, m)

    def _log(self, state, step: int, m: dict) -> None:
        self.trajectory.append({"step": step, **m})
        state.log_history.append({"step": step, **{f"dose/{k}": v for k, v in m.items()}})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every < 1 or state.global_step % self.every:
            return
        m = self.measure(model)
        reason = _same_on_every_rank(self.decide(m))
        self._log(state, state.global_step, m)
        if reason is not None:
            self.stop_reason, self.stop_step = reason, state.global_step
            logger.info("self-dosing stopped at step %d: %s", state.global_step, reason)
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.stop_reason is None:
            self.stop_reason, self.stop_step = "max_steps", state.global_step

    def record(self) -> dict:
        return {
            "every": self.every,
            "tolerance": self.tolerance,
            "retain_guard": self.guard,
            "items": {"forget": len(self.forget), "holdout": len(self.holdout), "retain": len(self.retain)},
            "stop_reason": self.stop_reason,
            "stop_step": self.stop_step,
            "trajectory": self.trajectory,
        }


def _trajectory_of(log_history) -> list[dict]:
    """The checks logged in a run's history (``dose/*`` entries), as trajectory rows."""
    out = []
    for h in log_history:
        if "dose/p" in h:
            out.append(
                {"step": h["step"], **{k.removeprefix("dose/"): v for k, v in h.items() if k.startswith("dose/")}}
            )
    return out


def _same_on_every_rank(reason: str | None) -> str | None:
    """The main process's decision on every rank (the ranks must stop at the same step, or one waits forever)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return reason
    box = [reason]
    dist.broadcast_object_list(box, src=0)
    return box[0]
