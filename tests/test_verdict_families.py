"""The verdict on freshly trained models of all three benchmark families (authors: reported; inventors: tuning;
ships: checking), with 1, 2 and 3 retrained references: the untouched target is "distinguishable", a retrained
replica (another data order, the references' initialisation) never is."""

import os

import pytest

from llm_unlearn.evaluation import calibration as C

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# One benchmark seed per family in CI; more with LLM_UNLEARN_VERDICT_SEEDS=7,8,9 (each seed trains 15 models).
SEEDS = [int(x) for x in os.environ.get("LLM_UNLEARN_VERDICT_SEEDS", "7").split(",") if x.strip()]
MODEL = dict(hidden_size=64, num_layers=2, vocab_size=600, learning_rate=3e-3)
# Enough epochs for the target to learn its forget set (the claim is about a target that knows it): the families
# that train every fact in two phrasings see each fact twice per epoch.
EPOCHS = {"authors": 40, "inventors": 20, "ships": 20}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", ["authors", "inventors", "ships"])
def test_target_distinguishable_and_replica_never_with_one_two_three_references(family, seed, tmp_path):
    from llm_unlearn.data.synth import SynthConfig, write_benchmark
    from llm_unlearn.evaluation.evaluator import EvalConfig
    from llm_unlearn.finetune import FinetuneConfig, finetune
    from llm_unlearn.stages import evaluate

    data = str(write_benchmark(SynthConfig(family=family, n_authors=20, seed=seed), tmp_path / "data"))

    def train(name, split, data_seed=None):
        cfg = FinetuneConfig(data=data, output_dir=str(tmp_path / name), split=split, seed=0, data_seed=data_seed,
                             num_train_epochs=EPOCHS[family], **MODEL)  # fmt: skip
        return str(finetune(cfg))

    target = train("target", "full")
    refs = [train(f"ref{d}", "retain90", data_seed=d) for d in (0, 1, 2)]
    replica = train("replica", "retain90", data_seed=3)
    cfg = EvalConfig(forget_split="forget10", max_new_tokens=24)
    for k in (1, 2, 3):
        own = evaluate(target, refs[:k], data, cfg, output=tmp_path / f"t{k}.json", target=target)
        assert own["calibration"]["verdict"]["status"] == C.DISTINGUISHABLE, (k, own["calibration"]["verdict"])
        rep = evaluate(replica, refs[:k], data, cfg, output=tmp_path / f"r{k}.json", target=target)
        assert rep["calibration"]["verdict"]["status"] != C.DISTINGUISHABLE, (k, rep["calibration"]["verdict"])
