"""Kernel microbenchmarks for `cpm bench engine --micro`: int4 GEMV vs tinygemm and cuBLAS bf16 at the 8B
layer shapes, and flash-decoding vs SDPA. Each kernel runs over enough weight copies to overflow the 60 MB
L2, inside a CUDA graph (so launch gaps are not counted), median of several replays."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.kernels.decode_attention import decode_attention
from engine.kernels.int4_matmul import int4_matmul

LAYER_SHAPES_8B = {"qkv": (4608, 4096), "o": (4096, 4096), "gate_up": (32768, 4096), "down": (4096, 16384)}


def _graph_ms(fn, reps: int = 20) -> float:
    """Median ms of one replay of a graph that calls fn once (fn warmed up first)."""
    fn()
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[reps // 2]


def _gemv_rows(ceil: dict, m: int) -> list[dict]:
    from bench._engine_model import random_int4
    from bench.peers.gptfast import Int4Linear

    rows = []
    for name, (n, k) in LAYER_SHAPES_8B.items():
        copies = max(2, (256 << 20) // (n * k // 2))  # >= 256 MB of int4 codes: far past the L2
        ours = [random_int4(n, k, 128, "cuda") for _ in range(copies)]
        tiny = [Int4Linear(k, n, "cuda") for _ in range(copies)]
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        xf = x.float()
        t_ours = _graph_ms(lambda: [int4_matmul(xf, w) for w in ours]) / copies
        t_tiny = _graph_ms(lambda: [lin(x) for lin in tiny]) / copies
        del tiny
        dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(max(2, copies // 4))]
        t_bf16 = _graph_ms(lambda: [F.linear(x, w) for w in dense]) / len(dense)
        del dense, ours
        torch.cuda.empty_cache()
        q_bytes = n * k // 2 + 2 * 2 * n * k // 128  # codes + bf16 scales and mins
        row = {"layer": name, "N": n, "K": k, "M": m, "ours_us": t_ours * 1e3, "tinygemm_us": t_tiny * 1e3,
               "cublas_bf16_us": t_bf16 * 1e3, "ours_GBps": q_bytes / t_ours / 1e6,
               "tinygemm_GBps": q_bytes / t_tiny / 1e6, "cublas_bf16_GBps": 2 * n * k / t_bf16 / 1e6}
        row["ours_frac"] = row["ours_GBps"] / ceil["copy_GBps"]
        rows.append(row)
    return rows


def _attention_rows(ceil: dict) -> list[dict]:
    rows = []
    for b, hq, hkv, d, length in [(1, 16, 2, 64, 4096), (1, 32, 2, 128, 4096), (1, 32, 2, 128, 32768),
                                  (8, 32, 2, 128, 4096)]:
        q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, hkv, length, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        lens = torch.full((b,), length, device="cuda", dtype=torch.int32)
        t_ours = _graph_ms(lambda: decode_attention(q, k, v, lens))
        t_sdpa = _graph_ms(lambda: F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True))
        kv_bytes = 2 * b * hkv * length * d * 2
        rows.append({"B": b, "Hq": hq, "Hkv": hkv, "D": d, "len": length, "ours_us": t_ours * 1e3,
                     "sdpa_us": t_sdpa * 1e3, "ours_GBps": kv_bytes / t_ours / 1e6,
                     "ours_frac": kv_bytes / t_ours / 1e6 / ceil["copy_GBps"]})
    return rows


def run_micro(ceil: dict) -> dict:
    """Run and print the microbenchmarks; returns their rows for the JSON report."""
    out = {"int4_gemv_m1": _gemv_rows(ceil, 1), "int4_gemm_m8": _gemv_rows(ceil, 8),
           "decode_attention": _attention_rows(ceil)}
    for key in ("int4_gemv_m1", "int4_gemm_m8"):
        print(f"{key}: layer N K | ours us GB/s (frac) | tinygemm us GB/s | cuBLAS bf16 us GB/s")
        for r in out[key]:
            print(f"  {r['layer']:<8}{r['N']:>6}{r['K']:>6} | {r['ours_us']:7.1f} {r['ours_GBps']:6.0f} "
                  f"({r['ours_frac']:.0%}) | {r['tinygemm_us']:7.1f} {r['tinygemm_GBps']:6.0f} | "
                  f"{r['cublas_bf16_us']:7.1f} {r['cublas_bf16_GBps']:6.0f}")
    print("decode attention: B Hq Hkv D len | ours us GB/s (frac) | SDPA us")
    for r in out["decode_attention"]:
        print(f"  {r['B']} {r['Hq']} {r['Hkv']} {r['D']} {r['len']} | {r['ours_us']:.1f} {r['ours_GBps']:.0f} "
              f"({r['ours_frac']:.0%}) | {r['sdpa_us']:.1f}")
    return out
