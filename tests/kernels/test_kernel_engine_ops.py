"""engine/ops.py's CUDA branches (int4 GEMV/GEMM, flash-decoding) vs its plain-PyTorch path, end to end on GPU:
a tiny random Llama checkpoint, its projections quantized to int4, greedy tokens with and without kernels."""
from __future__ import annotations

import pytest
import torch

from engine import ops
from tests.tiny_weights import quantize


def greedy(path, n_new: int = 24) -> list[int]:
    from engine.cache import KVCache
    from engine.engine import load_checkpoint
    from engine.model import Transformer
    from engine.rope import rope_table
    from engine.runner import Runner

    cfg, tensors = load_checkpoint(path)
    model = Transformer(cfg, tensors, str(path))
    for block in model.blocks:
        for lin in block.linears():
            lin.weight = quantize(lin.weight)
    model.to(torch.device("cuda"), torch.float32, cache_dense=False)
    cos, sin = (t.cuda() for t in rope_table(cfg, 128))
    runner = Runner(model, KVCache(cfg, 1, 128, torch.device("cuda"), torch.float32), cos, sin)
    prompt = torch.randint(0, cfg.vocab_size, (20,), generator=torch.Generator().manual_seed(0)).tolist()
    out = []
    with torch.inference_mode():
        tok = int(runner.prefill(prompt).argmax(-1))
        for pos in range(len(prompt), len(prompt) + n_new):
            out.append(tok)
            tok = int(runner.decode_one(tok, pos).argmax(-1))
    return out


@pytest.mark.gpu
def test_kernel_engine_ops_greedy_tokens_match_plain_path(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    LlamaForCausalLM(cfg).float().save_pretrained(tmp_path)
    try:
        ops.KERNELS = True
        with_kernels = greedy(tmp_path)
        ops.KERNELS = False
        plain = greedy(tmp_path)
    finally:
        ops.KERNELS = True
    assert with_kernels == plain
