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


# ---- issue 25: every malformed checkpoint is one line and exit 2, checked before anything is allocated ----
from tests.gguf_bytes import ARR, BOOL, F32, I32, STR, U32, U64, gguf_bytes, tiny_llama_kv  # noqa: E402

_T = [("token_embd.weight", [32, 16], 0, 0)]
BAD_GGUF = [  # (case, file bytes, words the one line must contain)
    ("head count 0", gguf_bytes(tiny_llama_kv(llama__attention__head_count=(U32, 0))), "head_count"),
    ("head count negative", gguf_bytes(tiny_llama_kv(llama__attention__head_count=(I32, -2))), "head_count"),
    ("head count a string", gguf_bytes(tiny_llama_kv(llama__attention__head_count=(STR, "two"))), "head_count"),
    ("head count an array", gguf_bytes(tiny_llama_kv(llama__attention__head_count=(ARR, (U32, [2])))),
     "head_count"),
    ("head count missing", gguf_bytes(tiny_llama_kv(llama__attention__head_count=None)), "head_count"),
    ("embedding length 0", gguf_bytes(tiny_llama_kv(llama__embedding_length=(U32, 0))), "embedding_length"),
    ("embedding length a bool", gguf_bytes(tiny_llama_kv(llama__embedding_length=(BOOL, True))),
     "embedding_length"),
    ("embedding length 2**40", gguf_bytes(tiny_llama_kv(llama__embedding_length=(U64, 2 ** 40))),
     "embedding_length"),
    ("context length a string", gguf_bytes(tiny_llama_kv(llama__context_length=(STR, "4k"))), "context_length"),
    ("rms eps NaN", gguf_bytes(tiny_llama_kv(llama__attention__layer_norm_rms_epsilon=(F32, float("nan")))),
     "layer_norm_rms_epsilon"),
    ("embedding not a multiple of heads", gguf_bytes(tiny_llama_kv(llama__attention__head_count=(U32, 3))),
     "multiple"),
    ("alignment 0", gguf_bytes(tiny_llama_kv(general__alignment=(U32, 0))), "alignment"),
    ("alignment a string", gguf_bytes(tiny_llama_kv(general__alignment=(STR, "32"))), "alignment"),
    ("alignment 3", gguf_bytes(tiny_llama_kv(general__alignment=(U32, 3))), "alignment"),
    ("tensor with 0 dims", gguf_bytes(tiny_llama_kv(), [("token_embd.weight", [], 0, 0)]), "dimensions"),
    ("tensor with a zero dim", gguf_bytes(tiny_llama_kv(), [("token_embd.weight", [32, 0], 0, 0)]), "zero"),
    ("tensor with 5 dims", gguf_bytes(tiny_llama_kv(), [("token_embd.weight", [1, 1, 1, 1, 32], 0, 0)]),
     "dimensions"),
    ("tensor with absurd dims", gguf_bytes(tiny_llama_kv(), [("token_embd.weight", [2 ** 40, 2 ** 40], 0, 0)]),
     "truncated"),
    ("tensor offset unaligned", gguf_bytes(tiny_llama_kv(), [("token_embd.weight", [32, 16], 0, 4)]),
     "offset"),
    ("tensor listed twice", gguf_bytes(tiny_llama_kv(), _T + _T, bytes(32 * 16 * 4)), "twice"),
    ("q weight with fewer rows than heads", gguf_bytes(tiny_llama_kv(), [("blk.0.attn_q.weight", [32, 1], 0, 0)],
                                                       bytes(32 * 4)), "expected"),
    ("embedding shape not the metadata's", gguf_bytes(tiny_llama_kv(), [("token_embd.weight", [32, 15], 0, 0)],
                                                      bytes(32 * 15 * 4)), "expected"),
    ("array count 2**60", gguf_bytes(tiny_llama_kv())
     .replace(b"\x08\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00", b"\x08\x00\x00\x00" + (2 ** 60).to_bytes(8, "little")),
     "array items"),
    ("metadata count 2**60", gguf_bytes(tiny_llama_kv(), n_kv=2 ** 60), "claims"),
    ("tensor count 2**60", gguf_bytes(tiny_llama_kv(), n_tensors=2 ** 60), "claims"),
    ("unknown value type", gguf_bytes(tiny_llama_kv()).replace(b"block_count\x04", b"block_count\x63"),
     "value type"),
    ("tokens not strings", gguf_bytes(tiny_llama_kv(tokenizer__ggml__tokens=(ARR, (U32, [1, 2])))),
     "tokenizer.ggml.tokens"),
    ("eos id a string", gguf_bytes(tiny_llama_kv(tokenizer__ggml__eos_token_id=(STR, "2"))), "eos_token_id"),
]


@pytest.mark.parametrize("case,raw,needle", BAD_GGUF, ids=[c[0] for c in BAD_GGUF])
def test_malformed_gguf_is_one_line(tmp_path, capsys, case, raw, needle):
    path = tmp_path / "bad.gguf"
    path.write_bytes(raw)
    with pytest.raises(EngineError, match=needle):
        load_checkpoint(path)
    err = cli_error(capsys, ["generate", "--model", str(path), "--device", "cpu", "hi"])
    assert str(path) in err and needle in err


def test_the_gguf_builder_makes_a_readable_file(tmp_path):
    """The cases above differ from a file the reader accepts by the one thing each names."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes(tiny_llama_kv()))
    f = GGUFFile(path)
    assert f.tensors["token_embd.weight"].shape == (16, 32) and f.metadata["llama.block_count"] == 1
    from engine.config import ModelConfig

    assert ModelConfig.from_gguf(f.metadata, set(f.tensors), str(path)).num_heads == 2


_LLAMA = {"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": 1, "num_attention_heads": 2}
BAD_HF = [  # (case, {file: text}, words the one line must contain)
    ("config.json a list", {"config.json": "[1, 2]"}, "JSON object"),
    ("config.json not JSON", {"config.json": "{oops"}, "not valid JSON"),
    ("zero heads", {"config.json": json.dumps({**_LLAMA, "num_attention_heads": 0})}, "num_attention_heads"),
    ("string size", {"config.json": json.dumps({**_LLAMA, "hidden_size": "32"})}, "hidden_size"),
    ("null size", {"config.json": json.dumps({**_LLAMA, "intermediate_size": None})}, "intermediate_size"),
    ("string eos id", {"config.json": json.dumps({**_LLAMA, "eos_token_id": "2"})}, "eos_token_id"),
    ("absurd vocab", {"config.json": json.dumps({**_LLAMA, "vocab_size": 10 ** 12})}, "vocab_size"),
    ("NaN eps", {"config.json": json.dumps({**_LLAMA, "rms_norm_eps": float("nan")})}, "rms_norm_eps"),
    ("rope_scaling a string", {"config.json": json.dumps({**_LLAMA, "rope_scaling": "yarn"})}, "rope_scaling"),
    ("deeply nested", {"config.json": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"}, "not valid JSON"),
    ("generation_config not JSON", {"config.json": json.dumps(_LLAMA), "generation_config.json": "eos=2"},
     "generation_config.json"),
    ("generation_config eos a string", {"config.json": json.dumps(_LLAMA),
                                        "generation_config.json": '{"eos_token_id": "2"}'}, "eos_token_id"),
    ("quantize_config not JSON", {"config.json": json.dumps(_LLAMA), "quantize_config.json": "bits: 4"},
     "quantize_config.json"),
    ("quantize_config bits a string", {"config.json": json.dumps(_LLAMA),
                                       "quantize_config.json": '{"bits": "4"}'}, "bits"),
    ("quantize_config group_size 0", {"config.json": json.dumps(_LLAMA),
                                      "quantize_config.json": '{"bits": 4, "group_size": 0}'}, "group_size"),
    ("shard index weight_map a list", {"config.json": json.dumps(_LLAMA),
                                       "model.safetensors.index.json": '{"weight_map": [1]}'}, "weight_map"),
    ("shard outside the folder", {"config.json": json.dumps(_LLAMA), "model.safetensors.index.json":
                                  '{"weight_map": {"a": "../../x.safetensors"}}'}, "weight_map.a"),
    ("shard index not JSON", {"config.json": json.dumps(_LLAMA), "model.safetensors.index.json": "{"},
     "not valid JSON"),
]


@pytest.mark.parametrize("case,files,needle", BAD_HF, ids=[c[0] for c in BAD_HF])
def test_malformed_hf_config_is_one_line(tmp_path, capsys, case, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    err = cli_error(capsys, ["generate", "--model", str(tmp_path), "--device", "cpu", "hi"])
    assert needle in err and str(tmp_path) in err


def test_folder_without_tokenizer_files_is_one_clear_line(tiny_llama, capsys):
    err = cli_error(capsys, ["generate", "--model", str(tiny_llama), "--device", "cpu", "hi"])
    assert "no tokenizer files" in err and "sentencepiece" not in err
