"""bench/_random_engine.py builds the engine's own Transformer at a MiniCPM4-like shape: it loads (names and
shapes as the engine expects), decodes with the muP knobs on, and weight_bytes counts what a step reads."""
from __future__ import annotations

import torch

from bench._random_engine import random_runner, weight_bytes
from bench.peers.shapes import Shape
from engine.quant import Int4Weight

TINY = Shape(hidden=128, layers=2, heads=4, kv_heads=2, inter=256, vocab=300, eps=1e-5, tied=True)


def test_random_int4_engine_decodes_on_cpu():
    torch.manual_seed(0)
    r = random_runner(TINY, "int4", 1, 40, device="cpu", dtype=torch.float32)
    cfg = r.model.cfg
    assert cfg.family == "minicpm" and r.model.blocks[0].rs != 1.0 and cfg.logit_scale != 1.0
    assert isinstance(r.model.blocks[0].qkv.weight, Int4Weight)
    tok = int(r.prefill(list(range(10, 22))).argmax(-1))
    for pos in range(12, 20):
        logits = r.decode_one(tok, pos)
        assert torch.isfinite(logits).all()
        tok = int(logits.argmax(-1))
    # int4 codes + fp32 scales and mins for the 7 projections, norms, the tied head and one embedding row
    d = TINY.head_dim
    params = TINY.layers * (TINY.hidden * (TINY.heads + 2 * TINY.kv_heads) * d + TINY.heads * d * TINY.hidden
                            + 3 * TINY.hidden * TINY.inter)
    want = params // 2 + 2 * 4 * params // 128 + 4 * TINY.hidden * (2 * TINY.layers + 1) + 4 * TINY.vocab * 128 + 4 * 128
    assert weight_bytes(r.model) == want
