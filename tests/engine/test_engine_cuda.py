"""The same tiny checkpoints on CUDA: fp32 logits equal transformers' (prefill + cached decode), bf16 close,
and int4 layers dequantized one at a time on the GPU (ops.linear) equal the CPU reference."""
from __future__ import annotations

import pytest
import torch

from engine.cache import KVCache
from engine.engine import load_checkpoint
from engine.model import Transformer
from engine.rope import rope_table
from engine.runner import Runner

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def ieee_fp32():
    """Full fp32 matmuls (no TF32), so fp32 results compare at 1e-4."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def cuda_runner(path, dtype):
    cfg, tensors = load_checkpoint(path)
    dev = torch.device("cuda")
    model = Transformer(cfg, tensors, str(path)).to(dev, dtype, cache_dense=False)
    cos, sin = rope_table(cfg, 64)
    return Runner(model, KVCache(cfg, 2, 64, dev, dtype), cos.to(dev, dtype), sin.to(dev, dtype))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.15)])
def test_tiny_llama_on_cuda(tmp_path, dtype, tol):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    ref.save_pretrained(tmp_path)
    ids = torch.randint(0, 320, (20,)).tolist()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    r = cuda_runner(tmp_path, dtype)
    with torch.inference_mode():
        got = [r.prefill(ids[:12])[0].float().cpu()]
        got += [r.decode_one(ids[i], i)[0].float().cpu() for i in range(12, 20)]
    diff = max((g - want[i]).abs().max().item() for g, i in zip(got, range(11, 20)))
    assert diff < tol, diff


def test_int4_linear_on_cuda_matches_cpu(monkeypatch):
    """The plain PyTorch path on the GPU (the Triton kernels have their own tests in tests/kernels/)."""
    from engine import ops

    monkeypatch.setattr(ops, "KERNELS", False)
    from engine.quant import Int4Weight, pack_int4

    g = torch.Generator().manual_seed(0)
    w = Int4Weight(pack_int4(torch.randint(0, 16, (96, 128), generator=g)), torch.rand(96, 4, generator=g) * 0.1,
                   -torch.rand(96, 4, generator=g), 32, torch.randperm(128, generator=g))
    x = torch.randn(3, 128, generator=g)
    want = ops.linear(x, w)
    got = ops.linear(x.cuda(), w.to("cuda")).cpu()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
