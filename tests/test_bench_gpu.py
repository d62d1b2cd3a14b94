"""``eval/bench_gpu.py --small`` runs every row of the accelerator benchmark on the CPU, so the script cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_gpu_small_prints_every_row_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "eval" / "bench_gpu.py"), "--small", "--device", "cpu", "--steps", "2"]
    cmd += ["--warmup", "1", "--score_items", "3", "--candidates", "4", "--max_new_tokens", "4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from llm_unlearn.trainers import METHODS

    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"finetune (no regularizer)", *METHODS, "hessian"}
    for name, m in result["methods"].items():
        assert m["steps_timed"] == 2, name
        assert f"| {name} | {m['forwards_with_grad']} / {m['forwards_without_grad']} |" in proc.stdout
    methods = result["methods"]
    # what the forward hook counts: one batch for plain fine-tuning and gradient ascent, two for GradDiff, and NPO's
    # frozen reference runs without gradients (on the forget batch)
    assert (
        methods["finetune (no regularizer)"]["forwards_with_grad"],
        methods["grad_ascent"]["forwards_with_grad"],
    ) == (
        1,
        1,
    )
    assert (methods["grad_diff"]["forwards_with_grad"], methods["grad_diff"]["forwards_without_grad"]) == (2, 0)
    assert (methods["npo"]["forwards_with_grad"], methods["npo"]["forwards_without_grad"]) == (2, 1)
    scoring = result["scoring"]
    assert scoring["items"] == 3 and scoring["hutchinson"]["probes"] == 2
    assert result["partners"]["pairs"] == result["partners"]["forget_items"] * 4
    evaluation = result["evaluation"]
    assert evaluation["items"] == sum(evaluation["splits"].values())
    assert evaluation["items_per_second"] == pytest.approx(evaluation["items"] / evaluation["seconds"])
    assert "× plain fine-tuning step" in proc.stdout and "items/s" in proc.stdout
