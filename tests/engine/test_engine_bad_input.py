"""Bad input: one clear EngineError naming the file/tensor/limit; from the CLI one line on stderr, exit 2."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter

from engine.engine import load_checkpoint
from engine.errors import EngineError
from engine.gguf_file import GGUFFile
from tui.cli import main as cpm

torch.set_num_threads(1)


def cli_error(capsys, argv: list[str]) -> str:
    assert cpm(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import transformers

    path = tmp_path_factory.mktemp("tiny_llama")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def edited(src, dst, *, drop=None, reshape=None, config=None):
    """Copy a checkpoint, dropping or reshaping one tensor or rewriting config keys."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    t = load_file(str(dst / "model.safetensors"))
    if drop:
        del t[drop]
    if reshape:
        t[reshape] = t[reshape][:, :-1].contiguous()
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if config:
        raw = json.loads((dst / "config.json").read_text())
        raw.update(config)
        (dst / "config.json").write_text(json.dumps(raw))
    return dst


def test_missing_tensor(tiny_llama, tmp_path, capsys):
    bad = edited(tiny_llama, tmp_path / "m", drop="model.layers.0.mlp.down_proj.weight")
    err = cli_error(capsys, ["generate", "--model", str(bad), "--device", "cpu", "hi"])
    assert "missing tensor 'model.layers.0.mlp.down_proj.weight'" in err and str(bad) in err


def test_wrong_shape(tiny_llama, tmp_path, capsys):
    bad = edited(tiny_llama, tmp_path / "s", reshape="model.layers.0.self_attn.q_proj.weight")
    err = cli_error(capsys, ["generate", "--model", str(bad), "--device", "cpu", "hi"])
    assert "model.layers.0.self_attn.q_proj.weight" in err and "(32, 31)" in err and "(32, 32)" in err


def test_unknown_architecture(tiny_llama, tmp_path, capsys):
    bad = edited(tiny_llama, tmp_path / "a", config={"architectures": ["FooForCausalLM"], "model_type": "foo"})
    err = cli_error(capsys, ["generate", "--model", str(bad), "--device", "cpu", "hi"])
    assert "FooForCausalLM" in err and "config.json" in err


def test_truncated_gguf(smollm2_path, tmp_path, capsys):
    data = smollm2_path.read_bytes()
    for n, where in ((100_000, "header"), (len(data) // 2, "tensor data")):
        cut = tmp_path / f"cut{n}.gguf"
        cut.write_bytes(data[:n])
        with pytest.raises(EngineError, match="truncated"):
            load_checkpoint(cut)
    err = cli_error(capsys, ["generate", "--model", str(cut), "hi"])
    assert "truncated" in err and str(cut) in err


def _tiny_gguf(path, qtype=GGMLQuantizationType.IQ2_XXS):
    w = GGUFWriter(str(path), "llama")
    for key, val in (("block_count", 1), ("context_length", 64), ("embedding_length", 256),
                     ("feed_forward_length", 256), ("attention.head_count", 2), ("attention.head_count_kv", 2)):
        w.add_uint32(f"llama.{key}", val)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_array("tokenizer.ggml.tokens", ["a"] * 8)
    from gguf import GGML_QUANT_SIZES

    block, nbytes = GGML_QUANT_SIZES[qtype]
    w.add_tensor("blk.0.ffn_up.weight", np.zeros((256, 256 // block * nbytes), np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_quant_type(tmp_path):
    path = _tiny_gguf(tmp_path / "iq2.gguf")
    with pytest.raises(EngineError, match=r"'blk.0.ffn_up.weight' uses quant type IQ2_XXS"):
        load_checkpoint(path)


def test_unknown_quant_type_id(tmp_path):
    path = _tiny_gguf(tmp_path / "unknown.gguf")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"blk.0.ffn_up.weight") + len(b"blk.0.ffn_up.weight")
    at += 4 + 8 * 2  # n_dims, two dims
    raw[at:at + 4] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(EngineError, match="unknown ggml type id 99"):
        GGUFFile(path)


def test_not_a_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"hello world, not gguf")
    with pytest.raises(EngineError, match="not a GGUF file"):
        load_checkpoint(p)


def test_prompt_longer_than_context(capsys):
    err = cli_error(capsys, ["generate", "--max-seq-len", "8", "--max-tokens", "2",
                             "one two three four five six seven eight nine ten eleven"])
    assert "context limit is 8" in err
