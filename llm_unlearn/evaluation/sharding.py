"""Evaluation over several processes: each rank scores and generates its share of the items, every rank gets all.

Launched with ``WORLD_SIZE > 1`` (``accelerate launch --multi_gpu --num_processes N ... -m llm_unlearn.cli eval`` or
``torchrun --nproc_per_node N -m llm_unlearn.cli eval``), :func:`evaluation_processes` opens the process group
(``accelerate.PartialState``: gloo on CPU, nccl on GPU); each rank loads the model itself. The functions below have
the names and signatures of their :mod:`.scoring` namesakes and return the same full, ordered lists on every rank,
so every metric computed downstream sees every item. Without a process group (or with one process) they are plain
calls of those namesakes.

Why the shares are whole batches: scoring and generation sort the items by length and cut that order into
consecutive batches, and a batch's composition sets its padded width, hence the shapes of the matrix products, hence
the last bits of the logits (and, for greedy generation, possibly a near-tied argmax). :func:`batch_shares` cuts the
same length order into the same batches and deals whole batches out (batch ``j`` to rank ``j mod N``); each rank's
share stays in length order, so the stable re-sort inside scoring keeps it, and the rank cuts exactly the batches a
single process would. N processes then compute the very batches one process computes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank_and_world()[0] == 0


@contextlib.contextmanager
def evaluation_processes():
    """Open the process group of a multi-process launch (``WORLD_SIZE > 1`` in the environment, as torchrun and
    ``accelerate launch`` set it) unless one is open already; yields whether this is the main process.

    On the other ranks the package's warnings are silenced (rank 0 says them once). When the block ends without
    error, every rank waits at a barrier, so none leaves before the main process has written its files, and a group
    opened here is closed (an open group can abort the interpreter at exit). On an error nothing waits: the launcher
    stops the other ranks."""
    import torch.distributed as dist

    opened = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (dist.is_available() and dist.is_initialized()):
        import torch
        from accelerate import PartialState

        # cpu=True where there is no GPU: without it accelerate opens a group with no named backend and reports a
        # single process (DistributedType.NO) although torch.distributed runs two.
        PartialState(cpu=not torch.cuda.is_available())  # from the launcher's environment; sets this rank's GPU
        opened = True
    main = is_main_process()
    package_logger = logging.getLogger("llm_unlearn")
    level = package_logger.level
    if not main:
        package_logger.setLevel(logging.ERROR)
    try:
        yield main
        if rank_and_world()[1] > 1:
            dist.barrier()
    finally:
        package_logger.setLevel(level)
        if opened and dist.is_initialized():
            dist.destroy_process_group()


def from_main(value: T) -> T:
    """The main process's ``value`` on every rank (a collective: every rank must call it). Used where ranks could
    disagree about a file, e.g. a cache entry the main process reads while another rank does not see it yet: the
    ranks must take the same path, or one waits forever for a collective the others skip."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def batch_shares(lengths: Sequence[int], batch_size: int, world_size: int) -> list[list[int]]:
    """Each rank's item indices: the items sorted by length (stable, as scoring sorts them), cut into consecutive
    batches of ``batch_size``, batch ``j`` dealt to rank ``j mod world_size`` (short and long batches alike, so the
    work is spread evenly); within a share the indices stay in length order."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be positive, got {batch_size} and {world_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [[i for batch in batches[rank::world_size] for i in batch] for rank in range(world_size)]


def map_sharded(
    fn: Callable[[list[T]], list[R]], items: Sequence[T], lengths: Sequence[int], batch_size: int
) -> list[R]:
    """``fn(items)``, computed as each rank's ``fn(share)`` (see :func:`batch_shares`) and gathered on every rank in
    the original order. ``fn`` maps a list to one result per item, in order; a collective when a group is open."""
    import torch.distributed as dist

    rank, world = rank_and_world()
    if world == 1:
        return fn(list(items))
    if len(lengths) != len(items):
        raise ValueError(f"{len(items)} items but {len(lengths)} lengths")
    shares = batch_shares(lengths, batch_size, world)
    mine = [items[i] for i in shares[rank]]
    results = fn(mine) if mine else []
    if len(results) != len(mine):
        raise RuntimeError(f"rank {rank}: {len(results)} results for {len(mine)} items")
    gathered: list[list[R] | None] = [None] * world
    dist.all_gather_object(gathered, results)
    out: list[R | None] = [None] * len(items)
    for share, part in zip(shares, gathered):
        for i, result in zip(share, part):
            out[i] = result
    return out  # type: ignore[return-value]


# --- the scoring functions, sharded -------------------------------------------------------------------------------


def score_encoded(
    model, encoded: Sequence[dict], pad_token_id: int, batch_size: int = 32, max_memory: int | None = None
):
    """:func:`.scoring.score_encoded` over the processes (``max_memory``: its bound; ``None``: its default)."""
    from . import scoring

    mem = scoring.DEFAULT_MAX_SCORING_MEMORY if max_memory is None else max_memory
    return map_sharded(
        lambda share: scoring.score_encoded(model, share, pad_token_id, batch_size, mem),
        encoded,
        [len(e["input_ids"]) for e in encoded],
        batch_size,
    )


def score_answers(
    model,
    formatter,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 32,
    max_memory: int | None = None,
):
    """:func:`.scoring.score_answers` over the processes."""
    from . import scoring

    mem = scoring.DEFAULT_MAX_SCORING_MEMORY if max_memory is None else max_memory
    if rank_and_world()[1] == 1:
        return scoring.score_answers(model, formatter, questions, answers, batch_size, mem)
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    encoded = [formatter.encode(q, a) for q, a in zip(questions, answers)]
    return score_encoded(model, encoded, formatter.tokenizer.pad_token_id, batch_size, mem)


def generate_from_ids(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 32,
    stop: str | None = "\n\n",
) -> list[str]:
    """:func:`.scoring.generate_from_ids` over the processes."""
    from . import scoring

    return map_sharded(
        lambda share: scoring.generate_from_ids(model, tokenizer, share, max_new_tokens, batch_size, stop),
        prompts,
        [len(p) for p in prompts],
        batch_size,
    )


def generate_answers(
    model, formatter, questions: Sequence[str], max_new_tokens: int = 200, batch_size: int = 32
) -> list[str]:
    """:func:`.scoring.generate_answers` over the processes."""
    from . import scoring

    if rank_and_world()[1] == 1:
        return scoring.generate_answers(model, formatter, questions, max_new_tokens, batch_size)
    prompts = [formatter.prompt_ids(q) for q in questions]
    return generate_from_ids(model, formatter.tokenizer, prompts, max_new_tokens, batch_size, stop="\n\n")


def gradient_norms(model, encoded: Sequence[dict], pad_token_id: int) -> list[float]:
    """:func:`.scoring.gradient_norms` over the processes (one item per backward: any share gives the same
    numbers; dealt out by length so that the ranks do about the same work)."""
    from . import scoring

    return map_sharded(
        lambda share: scoring.gradient_norms(model, share, pad_token_id),
        encoded,
        [len(e["input_ids"]) for e in encoded],
        1,
    )
