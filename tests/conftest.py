"""Shared fixtures: a small synthetic benchmark and a tiny randomly initialised Llama built from a config."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_bench(tmp_path_factory):
    from llm_unlearn.data.synth import SynthConfig, write_benchmark

    return write_benchmark(SynthConfig(n_authors=10, seed=3), tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def tiny_tokenizer(small_bench):
    from llm_unlearn.finetune import corpus_texts
    from llm_unlearn.modeling import train_bpe_tokenizer

    return train_bpe_tokenizer(corpus_texts(str(small_bench), ["full"]), vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from llm_unlearn.modeling import build_tiny_llama

    return build_tiny_llama(tiny_tokenizer, seed=0, hidden_size=32, num_layers=1).eval()


@pytest.fixture(scope="module")
def one_torch_thread():
    """The models are tiny: intra-op threads only add synchronisation (several times slower on a busy machine).
    Modules that train use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
