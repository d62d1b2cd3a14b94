"""Evaluation over several processes (``llm_unlearn.evaluation.sharding``): the shares are whole batches of the
one-process order, so N processes compute the very batches one process computes, and a 2-process ``eval`` writes
the JSON a 1-process ``eval`` writes.

The slow test launches ``accelerate launch --multi_gpu --num_processes 2 ... -m MODULE`` (torchrun underneath, gloo
on CPU; ``--cpu --num_processes 2`` would start one process). Its module is ``python -m llm_unlearn.cli`` plus
per-rank observations (what was evaluated, what was written), and one twist: rank 1 never sees a cache file, so the
ranks must follow rank 0's reading of the cache or they would wait for each other's collectives forever.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llm_unlearn.evaluation.sharding import batch_shares, map_sharded

ROOT = Path(__file__).resolve().parents[1]


def test_batch_shares_deal_whole_length_sorted_batches():
    lengths = [5, 1, 3, 1, 2, 4, 2]
    # stable length order: 1 3 | 4 6 | 2 5 | 0 (batches of 2), dealt out in turn
    assert batch_shares(lengths, 2, 1) == [[1, 3, 4, 6, 2, 5, 0]]
    assert batch_shares(lengths, 2, 2) == [[1, 3, 2, 5], [4, 6, 0]]
    assert batch_shares(lengths, 2, 3) == [[1, 3, 0], [4, 6], [2, 5]]
    assert batch_shares(lengths, 4, 3) == [[1, 3, 4, 6], [2, 5, 0], []]  # more ranks than batches
    with pytest.raises(ValueError, match="batch_size"):
        batch_shares(lengths, 0, 2)


def test_without_a_process_group_it_is_one_plain_call():
    calls = []

    def fn(items):
        calls.append(list(items))
        return [x * 10 for x in items]

    assert map_sharded(fn, [3, 1, 2], [3, 1, 2], 1) == [30, 10, 20]
    assert calls == [[3, 1, 2]]


@pytest.mark.parametrize("world", [2, 3])
def test_each_share_is_scored_and_generated_in_the_batches_of_one_process(
    tiny_model, tiny_tokenizer, small_bench, world, monkeypatch
):
    """Scoring and generation cut each rank's share into exactly the batches (same rows, same padded tensors) they
    cut from all the items, so every item's numbers are the same to the bit. If scoring ever batches differently,
    ``batch_shares`` must follow it."""
    from llm_unlearn.data.formatting import QAFormatter
    from llm_unlearn.data.loading import load_split
    from llm_unlearn.evaluation import scoring

    rows = load_split(str(small_bench), "full")[:23]
    formatter = QAFormatter(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    encoded = [formatter.encode(r["question"], r["answer"]) for r in rows]
    prompts = [formatter.prompt_ids(r["question"]) for r in rows]
    batch = 4
    calls = []
    # every padded batch that scoring builds (the model's own forward is not called on the bounded path: the decoder
    # body and the head are, after a probe)
    collate = scoring.QACollator.__call__
    monkeypatch.setattr(
        scoring.QACollator,
        "__call__",
        lambda self, items: calls.append(collate(self, items)["input_ids"].tolist()) or collate(self, items),
    )
    whole = scoring.score_encoded(tiny_model, encoded, pad, batch)
    whole_batches, calls[:] = list(calls), []
    shares = batch_shares([len(e["input_ids"]) for e in encoded], batch, world)
    parts = [scoring.score_encoded(tiny_model, [encoded[i] for i in share], pad, batch) for share in shares]
    monkeypatch.undo()
    assert len(whole_batches) == math.ceil(len(rows) / batch)
    assert sorted(calls) == sorted(whole_batches)
    for share, part in zip(shares, parts):
        for i, scores in zip(share, part):
            np.testing.assert_array_equal(scores.logprobs, whole[i].logprobs)
            np.testing.assert_array_equal(scores.sigma, whole[i].sigma)

    generate = tiny_model.generate

    def recording_generate(**kwargs):
        calls.append(kwargs["input_ids"].tolist())
        return generate(**kwargs)

    monkeypatch.setattr(tiny_model, "generate", recording_generate)
    calls.clear()
    texts = scoring.generate_from_ids(tiny_model, tiny_tokenizer, prompts, 4, batch, stop=None)
    whole_batches, calls[:] = list(calls), []
    shares = batch_shares([len(p) for p in prompts], batch, world)
    for share in shares:
        part = scoring.generate_from_ids(tiny_model, tiny_tokenizer, [prompts[i] for i in share], 4, batch, stop=None)
        assert part == [texts[i] for i in share]
    assert sorted(calls) == sorted(whole_batches)


# --- `eval` on two processes --------------------------------------------------------------------------------------

PROBE_MODULE = '''\
"""`python -m llm_unlearn.cli`, run once per argument list (lists separated by `--then`) in one process group, with
per-rank observations written to $PROBE_DIR (see tests/test_sharded_eval.py)."""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from accelerate import PartialState

from llm_unlearn import cli
from llm_unlearn.evaluation import evaluator, run, text_eval

RANK = int(os.environ["RANK"])
PROBE = Path(os.environ["PROBE_DIR"])
evaluated, writes = [], []


def recording(module, name, note):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        note(args)
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


read_cache = evaluator.read_json_cache
evaluator.read_json_cache = lambda path: None if RANK else read_cache(path)  # rank 1 never sees a cache file
recording(evaluator, "evaluate_qa", lambda a: evaluated.append(f"qa {a[4]}"))
recording(text_eval, "evaluate_text", lambda a: evaluated.append("text"))
recording(evaluator, "atomic_write_json", lambda a: writes.append(["cache", str(a[0])]))
recording(run, "write_report", lambda a: writes.append(["report", str(a[1])]))


def main():
    PartialState(cpu=True)  # one group for every evaluation below: `eval` leaves a group it did not open as it is
    runs, argv = [[]], sys.argv[1:]
    for arg in argv:
        runs.append([]) if arg == "--then" else runs[-1].append(arg)
    codes = [cli.main(args) for args in runs]
    info = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "backend": str(dist.get_backend()),
        "codes": codes,
        "evaluated": evaluated,
        "writes": writes,
    }
    (PROBE / f"rank{RANK}.json").write_text(json.dumps(info))
    dist.barrier()
    dist.destroy_process_group()
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
'''

# The documented launch (README): accelerate's torchrun path, two processes on this machine, gloo on CPU.
LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",  # accelerate picks a free port
]


@pytest.fixture(scope="module")
def eval_models(small_bench, tiny_tokenizer, tmp_path_factory):
    """Two randomly initialised tiny models saved as folders (random weights generate varied text to the last
    token: a strict test of greedy generation), and the text benchmark derived from ``small_bench``."""
    from llm_unlearn.data.synth import write_text_corpus
    from llm_unlearn.modeling import build_tiny_llama

    root = tmp_path_factory.mktemp("sharded")
    folders = []
    for name, seed in (("target", 1), ("ref", 2)):
        build_tiny_llama(tiny_tokenizer, seed=seed, hidden_size=32, num_layers=1).save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
        folders.append(root / name)
    text = write_text_corpus(small_bench, root / "text", forget_split="forget10")
    return *folders, text


def _numbers_agree(a, b, path="") -> float:
    """The largest absolute difference between the numbers of two JSON values; everything else must be equal."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), path
        return max([_numbers_agree(a[k], b[k], f"{path}/{k}") for k in a], default=0.0)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        return max([_numbers_agree(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))], default=0.0)
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and not isinstance(b, bool), path
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), path
            return 0.0
        assert abs(a - b) <= 1e-6, (path, a, b)
        return abs(a - b)
    assert a == b, (path, a, b)
    return 0.0


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_two_process_eval_equals_one_process(eval_models, small_bench, tmp_path):
    from llm_unlearn.cli import main

    target, ref, text = eval_models
    out = tmp_path / "out"
    runs = {
        "qa": [
            *("eval", "--model", str(target), "--reference", str(ref), "--data", str(small_bench)),
            *("--batch_size", "3", "--max_new_tokens", "12", "--gradnorm", "--output", str(out / "qa.json")),
        ],
        "text": [
            *("eval", "--model", str(target), "--reference", str(ref), "--data", str(text), "--data_format", "text"),
            *("--batch_size", "3", "--max_length", "64", "--verbmem_max_new_tokens", "12"),
            *("--knowmem_max_new_tokens", "6", "--gradnorm", "--no_cache", "--output", str(out / "text.json")),
        ],
    }
    one = {}
    for name, argv in runs.items():
        assert main(argv) == 0
        one[name] = json.loads((out / f"{name}.json").read_text())
    assert len(one["qa"]["splits"]["forget"]["items"]) > 3  # several batches of 3, on each rank
    # The target is evaluated again on two processes; the reference's QA evaluation is reused from its cache,
    # which rank 0 reads and rank 1 does not see (the text evaluation runs with --no_cache: both models anew).
    shutil.rmtree(target / "eval_cache")

    probe_dir, module_dir = tmp_path / "probe", tmp_path / "modules"
    probe_dir.mkdir()
    module_dir.mkdir()
    (module_dir / "probe_eval.py").write_text(PROBE_MODULE)
    env = {
        **os.environ,
        "PROBE_DIR": str(probe_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(module_dir), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [sys.executable, *LAUNCH, "-m", "probe_eval", *runs["qa"], "--then", *runs["text"]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"launch failed after {seconds:.0f} s:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, info in enumerate(ranks):
        assert (info["rank"], info["world_size"], info["backend"], info["codes"]) == (r, 2, "gloo", [0, 0])
        # both ranks took rank 0's cache hit for the reference, and evaluated everything else together
        assert info["evaluated"] == ["qa target", "text", "text"], r
    # only rank 0 wrote: the target's QA cache, the QA report, both text caches, the text report; and printed
    assert ranks[1]["writes"] == []
    assert [kind for kind, _ in ranks[0]["writes"]] == ["cache", "report", "cache", "cache", "report"]
    assert [Path(path).parents[1] for _, path in ranks[0]["writes"][2:4]] == [ref, target]
    assert proc.stdout.count("| metric | model | reference | gap |") == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["qa.json", "qa.md", "qa_truth_ratio_ecdf.png", "text.json", "text.md"]
    )
    worst = {name: _numbers_agree(one[name], json.loads((out / f"{name}.json").read_text())) for name in runs}
    print(f"max |2-process - 1-process| over every number of the JSON: {worst}; 2-process launch {seconds:.1f} s")
