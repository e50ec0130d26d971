"""The engine's CPU int4 GEMV (engine/cpu_q4.c via engine/cpu_q4.py) against the dequantized fp32 reference."""
from __future__ import annotations

import pytest
import torch

from engine import cpu_q4
from engine.quant import Int4Weight, dequantize, pack_int4

pytestmark = pytest.mark.skipif(not cpu_q4.available(), reason="no C compiler or no AVX2 here")


def _weight(n: int, k: int, group: int, seed: int = 0) -> Int4Weight:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g)
    return Int4Weight(pack_int4(codes), torch.rand(n, k // group, generator=g) * 0.02 + 1e-3,
                      -torch.rand(n, k // group, generator=g) * 0.1, group)


@pytest.mark.parametrize("n,k,group,m", [(64, 96, 32, 1), (40, 256, 128, 3), (8, 64, 64, 7)])
def test_exact_when_activations_are_int16_representable(n, k, group, m):
    """x = per-group power-of-two scale x integers with max 32767: the int16 step is lossless, so only fp32
    rounding separates the kernel from the reference (this checks the nibble order, groups, mins, rows)."""
    w = _weight(n, k, group)
    g = torch.Generator().manual_seed(1)
    xi = torch.randint(-32767, 32768, (m, k // 32, 32), generator=g)
    xi[:, :, 5] = 32767  # the group's max: dx = 2^-s exactly, so xq = xi
    x = (xi * 2.0 ** -torch.randint(12, 20, (m, k // 32, 1), generator=g)).reshape(m, k).float()
    ref = x.double() @ dequantize(w).double().t()
    got = cpu_q4.cpu_q4_linear(x, cpu_q4.to_cpu_q4(w))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def test_close_on_real_valued_activations():
    w = _weight(256, 576, 32)
    x = torch.randn(2, 1, 576)
    ref = x @ dequantize(w).t()
    got = cpu_q4.cpu_q4_linear(x, cpu_q4.to_cpu_q4(w))
    assert got.shape == (2, 1, 256)
    assert ((got - ref).norm() / ref.norm()) < 1e-4  # int16 activations per 32 values


@pytest.mark.parametrize("m", [2, 3, 4, 5, 9, 70])
def test_a_token_gets_the_same_bits_alone_or_batched(m):
    """The kernel unpacks each weight group once for up to four tokens; a token's own arithmetic must not change
    with the batch (speculative verification is lossless only if a verified token equals a decoded one)."""
    q = cpu_q4.to_cpu_q4(_weight(67, 192, 64, seed=m))  # 67 rows: a partial row block at the end
    x = torch.randn(m, 192, generator=torch.Generator().manual_seed(m))
    batched = cpu_q4.cpu_q4_linear(x, q)
    alone = torch.cat([cpu_q4.cpu_q4_linear(x[i:i + 1], q) for i in range(m)])
    assert torch.equal(batched, alone)


@pytest.mark.parametrize("group", [32, 128])
def test_long_prompt_chunks_take_the_dequantized_gemm(group):
    """From DENSE_FROM_ROWS rows the weight is dequantized in C and multiplied in fp32: equal to the reference
    up to fp32 summation order, and close to the int16 dot the shorter calls take."""
    w = _weight(96, 256, group, seed=3)
    q = cpu_q4.to_cpu_q4(w)
    x = torch.randn(cpu_q4.DENSE_FROM_ROWS + 5, 256, generator=torch.Generator().manual_seed(4))
    got = cpu_q4.cpu_q4_linear(x, q)
    torch.testing.assert_close(got, x @ dequantize(w).t(), rtol=1e-5, atol=1e-5)
    short = torch.cat([cpu_q4.cpu_q4_linear(x[i:i + 64], q) for i in range(0, len(x), 64)])
    assert ((got - short).norm() / got.norm()) < 1e-4


def test_act_order_and_odd_groups_are_left_to_other_kernels():
    w = _weight(16, 64, 32)
    assert cpu_q4.to_cpu_q4(Int4Weight(w.packed, w.scales, w.mins, 32, torch.randperm(64))) is None
    assert cpu_q4.to_cpu_q4(Int4Weight(w.packed[:, :8], w.scales[:, :1], w.mins[:, :1], 16)) is None


def test_default_cpu_engine_runs_on_it_and_answers(smollm2_path):
    from engine import Engine, SamplingParams

    eng = Engine.load(str(smollm2_path), device="cpu", max_seq_len=256)
    assert isinstance(eng.model.blocks[0].gate_up.fast, cpu_q4.CpuQ4)
    r = eng.chat([{"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=16))
    assert "Paris" in r.text


def test_whole_layer_decode_in_c_matches_the_python_layer(smollm2_path):
    """q4_layer_forward (LayerStep) against model.Block's plain path on the same int4 kernel: logits over 6
    decode steps (cache rows past max_seq_len 64 and the head included) and the greedy tokens."""
    from engine import Engine

    eng = Engine.load(str(smollm2_path), device="cpu", max_seq_len=100)
    steps = [b.cpu_step for b in eng.model.blocks]
    assert all(s is not None for s in steps)

    def run(in_c: bool) -> list[torch.Tensor]:
        for b, s in zip(eng.model.blocks, steps):
            b.cpu_step = s if in_c else None
        out = []
        with torch.inference_mode():
            tok = int(eng.runner.prefill(list(range(100, 180))).argmax())
            for i in range(6):
                out.append(eng.runner.decode_one(tok, 80 + i).clone())
                tok = int(out[-1].argmax())
        return out

    plain, fused = run(False), run(True)
    for a, b in zip(plain, fused):
        assert int(a.argmax()) == int(b.argmax())
        assert (a - b).norm() / a.norm() < 1e-2


@pytest.mark.parametrize("scale_depth,heads", [(None, (4, 2)), (1.4, (4, 1)), (1.4, (4, 4))])
def test_c_layer_matches_the_python_layer_on_tiny_models(scale_depth, heads):
    """Random int4 Llama / MiniCPM-style models (residual scale, scale_emb, GQA ratios): a causal prefill of 20
    tokens, a tree-masked 3-token step and 4 decode steps through the C layer match the PyTorch layer on the same
    int4 kernel."""
    from engine.cache import KVCache
    from engine.config import ModelConfig
    from engine.model import StepContext, Transformer
    from engine.rope import rope_table

    nh, nkv = heads
    H, I, D, V, L = 64, 96, 16, 80, 2
    cfg = ModelConfig("minicpm" if scale_depth else "llama", V, H, I, L, nh, nkv, D, scale_depth=scale_depth,
                      scale_emb=2.0 if scale_depth else 1.0, tie_word_embeddings=True)
    g = torch.Generator().manual_seed(0)

    def lin(rows: int, cols: int) -> Int4Weight:
        return _weight(rows, cols, 32, int(torch.randint(0, 1000, (1,), generator=g)))

    t = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.5, "model.norm.weight": torch.ones(H)}
    for i in range(L):
        p = f"model.layers.{i}."
        t |= {p + "self_attn.q_proj.weight": lin(nh * D, H), p + "self_attn.k_proj.weight": lin(nkv * D, H),
              p + "self_attn.v_proj.weight": lin(nkv * D, H), p + "self_attn.o_proj.weight": lin(H, nh * D),
              p + "mlp.gate_proj.weight": lin(I, H), p + "mlp.up_proj.weight": lin(I, H),
              p + "mlp.down_proj.weight": lin(H, I), p + "input_layernorm.weight": 1 + 0.1 * torch.randn(H, generator=g),
              p + "post_attention_layernorm.weight": 1 + 0.1 * torch.randn(H, generator=g)}
    model = Transformer(cfg, t, "test").to(torch.device("cpu"), torch.float32, cache_dense=True, cpu_int4=True)
    steps = [b.cpu_step for b in model.blocks]
    assert all(s is not None for s in steps)
    cos, sin = rope_table(cfg, 64)
    ids = torch.randint(0, V, (1, 27), generator=g)
    tree = torch.tensor([[[[True] * 20 + [True, False, False], [True] * 20 + [True, True, False],
                           [True] * 20 + [True, False, True]]]])  # a root and two children, after 20 cached

    def run(in_c: bool) -> list[torch.Tensor]:
        for b, s in zip(model.blocks, steps):
            b.cpu_step = s if in_c else None
        cache = KVCache(cfg, 1, 64, torch.device("cpu"), torch.float32)
        with torch.inference_mode():
            out = [model.hidden(ids[:, :20], StepContext(start=0, kv_len=20, causal=True, cos=cos[None, :20],
                                                         sin=sin[None, :20]), cache, last_only=False)[0]]
            pos = torch.tensor([20, 21, 21])
            step = StepContext(start=20, kv_len=23, mask=tree, cos=cos[pos][None], sin=sin[pos][None])
            out.append(model.hidden(ids[:, 20:23], step, cache, last_only=False)[0])
            for i in range(20, 24):  # decode over the cache (overwrites the tree's slots, as acceptance would)
                step = StepContext(start=i, kv_len=i + 1, cos=cos[None, i:i + 1], sin=sin[None, i:i + 1])
                out.append(model.hidden(ids[:, 23 + i - 20:24 + i - 20], step, cache))
        return out

    # in C, a token verified in the tree equals the same token decoded alone, bit for bit (speculation is lossless)
    with torch.inference_mode():
        for b, s in zip(model.blocks, steps):
            b.cpu_step = s
        c1, c2 = KVCache(cfg, 1, 64, torch.device("cpu"), torch.float32), KVCache(cfg, 1, 64, torch.device("cpu"),
                                                                                 torch.float32)
        for c in (c1, c2):
            model.hidden(ids[:, :20], StepContext(start=0, kv_len=20, causal=True, cos=cos[None, :20],
                                                  sin=sin[None, :20]), c)
        pos = torch.tensor([20, 21, 21])
        in_tree = model.hidden(ids[:, 20:23], StepContext(start=20, kv_len=23, mask=tree, cos=cos[pos][None],
                                                          sin=sin[pos][None]), c1, last_only=False)[0]
        alone = [model.hidden(ids[:, 20 + i:21 + i], StepContext(start=20 + i, kv_len=21 + i,
                                                                 cos=cos[None, 20 + i:21 + i],
                                                                 sin=sin[None, 20 + i:21 + i]), c2)[0, 0]
                 for i in range(2)]
        assert torch.equal(in_tree[0], alone[0]) and torch.equal(in_tree[1], alone[1])

    # post-norm hidden states: summation order differs (~1e-7), and such a difference can move an activation
    # across an int16 rounding step in the next GEMV, so the two agree to ~1e-4, not bit for bit
    for a, b in zip(run(False), run(True)):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
