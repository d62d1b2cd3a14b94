"""GGUF bases: a .gguf file (or a folder holding one) is converted once into a cached fp32 model folder that every
stage loads like any other. Tested on a tiny random Llama written as GGUF with SmolLM2's real tokenizer."""

import json
import os
import shutil
import subprocess

import pytest
import torch

from llm_unlearn.cli import main
from llm_unlearn.modeling import GGUF_SOURCE, converted_gguf_folder, find_gguf, resolve_model_source

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_conversion_keeps_weights_ties_special_tokens_and_chat_template(tiny_smollm2_gguf, tiny_smollm2_folder):
    from gguf import GGUFReader, dequantize
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = tiny_smollm2_folder
    assert folder == converted_gguf_folder(tiny_smollm2_gguf) and folder.name.startswith("tiny-smollm2-")
    assert (folder / "model.safetensors").is_file() and not list(folder.parent.glob(".*.tmp"))
    config = AutoConfig.from_pretrained(folder)
    assert getattr(config, "quantization_config", None) is None and config.tie_word_embeddings
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32 and model.config.vocab_size == 49152
    reader = GGUFReader(tiny_smollm2_gguf)
    tensors = {t.name: t for t in reader.tensors}
    embed = tensors["token_embd.weight"]  # stored as Q8_0: the folder holds its dequantized values
    expected = torch.from_numpy(dequantize(embed.data, embed.tensor_type).copy())
    assert torch.equal(model.get_input_embeddings().weight, expected)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # still tied
    v = torch.from_numpy(tensors["blk.0.attn_v.weight"].data.copy())
    assert torch.equal(model.model.layers[0].self_attn.v_proj.weight, v)

    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == 49152
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.chat_template == reader.fields["tokenizer.chat_template"].contents()
    assert GenerationConfig.from_pretrained(folder).eos_token_id == 2
    source = json.loads((folder / GGUF_SOURCE).read_text())
    assert source["gguf"] == str(tiny_smollm2_gguf.resolve()) and source["size"] == tiny_smollm2_gguf.stat().st_size
    assert source["token_ids"] == {"bos": 1, "eos": 2, "pad": 2, "unk": 0} and source["tie_word_embeddings"]


def test_a_conversion_is_reused_by_content_and_other_sources_pass_through(
    tiny_smollm2_gguf, tiny_smollm2_folder, tmp_path, monkeypatch
):
    import llm_unlearn.modeling as modeling

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(modeling, "convert_gguf", no_conversion)
    assert resolve_model_source(tiny_smollm2_gguf) == str(tiny_smollm2_folder)
    copy = tmp_path / "elsewhere" / tiny_smollm2_gguf.name
    copy.parent.mkdir()
    shutil.copy(tiny_smollm2_gguf, copy)  # the same content elsewhere: the same conversion
    assert resolve_model_source(copy) == str(tiny_smollm2_folder)
    assert resolve_model_source(copy.parent) == str(tiny_smollm2_folder)  # a folder holding one GGUF file
    for other in ("HuggingFaceTB/SmolLM2-135M-Instruct", str(tiny_smollm2_folder)):
        assert resolve_model_source(other) == other
    from llm_unlearn.modeling import load_causal_lm, load_tokenizer

    assert load_tokenizer(copy).eos_token == "<|im_end|>"  # the loaders take the GGUF file too
    assert load_causal_lm(copy).config.vocab_size == 49152


def test_which_paths_name_a_gguf_file(tmp_path):
    from llm_unlearn.validation import check_model_source

    with pytest.raises(FileNotFoundError, match="--model missing.gguf: no such GGUF file"):
        find_gguf("missing.gguf")
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.gguf").write_bytes(b"GGUF" + bytes(8))
    assert find_gguf(one) == one / "a.gguf"
    (one / "b.gguf").write_bytes(b"GGUF" + bytes(8))
    with pytest.raises(ValueError, match=r"several GGUF files \(a.gguf, b.gguf\)"):
        find_gguf(one, "--model_name_or_path")
    (one / "config.json").write_text("{}")  # a saved model folder that also ships GGUF files: the folder is meant
    assert find_gguf(one) is None
    (tmp_path / "fake.gguf").write_text("not a model")
    with pytest.raises(ValueError, match="not a GGUF file"):
        check_model_source(str(tmp_path / "fake.gguf"), "--model")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file; expected a model folder .* or a .gguf file"):
        check_model_source(str(tmp_path / "weights.bin"), "--model")


def test_an_interrupted_conversion_leaves_no_folder_that_is_trusted(tmp_path, monkeypatch):
    import llm_unlearn.modeling as modeling

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(8))
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    folder = converted_gguf_folder(gguf)

    def killed(src, out):
        (out / "config.json").write_text("{}")  # half written when the process is stopped
        raise KeyboardInterrupt

    monkeypatch.setattr(modeling, "_write_converted", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_source(gguf)
    assert not folder.exists() and os.listdir(folder.parent) == []

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = folder.parent / f".{folder.name}.{dead.pid}.x1.tmp"  # left by a process killed with SIGKILL
    (stale / "sub").mkdir(parents=True)
    written = []

    def converts(src, out):
        (out / "config.json").write_text("{}")
        written.append(out)
        return {"model_type": "llama"}

    monkeypatch.setattr(modeling, "_write_converted", converts)
    assert resolve_model_source(gguf) == str(folder)
    assert os.listdir(folder.parent) == [folder.name] and not stale.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert json.loads((folder / GGUF_SOURCE).read_text())["model_type"] == "llama"
    assert resolve_model_source(gguf) == str(folder) and len(written) == 1  # done once


def test_a_missing_gguf_base_fails_before_any_work(tmp_path, small_bench, capsys):
    out = tmp_path / "out"
    missing = str(tmp_path / "nowhere" / "model.gguf")
    assert main(["finetune", "--data", str(small_bench), "--model", missing, "--output_dir", str(out)]) == 2
    assert f"--model {missing}: no such GGUF file" in capsys.readouterr().err
    argv = ["--model_name_or_path", missing, "--data", str(small_bench), "--output_dir", str(out)]
    assert main(["unlearn", *argv]) == 2
    assert f"--model_name_or_path {missing}: no such GGUF file" in capsys.readouterr().err
    assert main(["eval", "--model", missing, "--reference", str(small_bench), "--data", str(small_bench)]) == 2
    assert f"--model {missing}: no such GGUF file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_finetune_on_a_gguf_base(tiny_smollm2_gguf, tiny_smollm2_folder, small_bench, tmp_path):
    """`finetune --model FILE.gguf` trains the converted folder; the outputs are ordinary model / adapter folders,
    and the record names the GGUF file the base came from. (`eval` on a GGUF reference: by hand, see the README;
    evaluating a 49,152-token vocabulary takes a minute here.)"""
    from llm_unlearn.finetune import RECORD
    from llm_unlearn.modeling import load_causal_lm, load_tokenizer

    common = ["--data", str(small_bench), "--model", str(tiny_smollm2_gguf), "--num_train_epochs", "0.1"]
    common += ["--learning_rate", "1e-2", "--warmup_ratio", "0", "--max_length", "96"]
    full, lora = tmp_path / "full", tmp_path / "lora"
    assert main(["finetune", *common, "--output_dir", str(full)]) == 0
    assert main(["finetune", *common, "--lora", "--output_dir", str(lora)]) == 0
    for out in (full, lora):
        record = json.loads((out / RECORD).read_text())
        assert record["base_model"] == str(tiny_smollm2_gguf)
        assert record["base_model_folder"] == str(tiny_smollm2_folder)
        assert load_tokenizer(out).chat_template == load_tokenizer(tiny_smollm2_folder).chat_template
    base = dict(load_causal_lm(tiny_smollm2_folder).named_parameters())
    trained = load_causal_lm(full)
    assert any(not torch.equal(p, base[n]) for n, p in trained.named_parameters()), "fine-tuning changed nothing"
    adapter = json.loads((lora / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_smollm2_folder)
    assert load_causal_lm(lora).get_base_model().config.vocab_size == 49152  # the adapter goes back on its base
    # --merge_lora: the same training saved as an ordinary model folder, the adapters folded into the weights
    merged = tmp_path / "merged"
    assert main(["finetune", *common, "--lora", "--merge_lora", "--output_dir", str(merged)]) == 0
    assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").is_file()
    ids = torch.tensor([[1, 5, 9, 200, 3000]])
    with torch.no_grad():
        want = load_causal_lm(lora)(input_ids=ids).logits
        got = load_causal_lm(merged)(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())


@pytest.mark.slow
def test_unlearn_from_a_gguf_base_records_where_it_came_from(
    tiny_smollm2_gguf, tiny_smollm2_folder, small_bench, tmp_path
):
    from llm_unlearn.unlearn import RECORD

    out = tmp_path / "ga"
    argv = ["unlearn", "--method", "grad_ascent", "--model_name_or_path", str(tiny_smollm2_gguf)]
    argv += ["--data", str(small_bench), "--output_dir", str(out), "--max_steps", "1", "--max_length", "96"]
    assert main([*argv, "--per_device_train_batch_size", "4", "--report_to", "none"]) == 0
    record = json.loads((out / RECORD).read_text())
    assert record["base_model"] == str(tiny_smollm2_gguf) and record["global_steps"] == 1
    assert record["base_model_folder"] == str(tiny_smollm2_folder)
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
