"""`cpm bench attention`: InfLLM v2 sparse attention vs the dense paths, per layer and in the whole model.

    cpm bench attention --shape 8b --context 32k,64k,128k [--whole-model 128k] [--json]

Per layer (bf16, batch 1, random q/k/v at the model's head shape): prefill of the whole context (sparse:
compress + select + block-sparse attention; dense: torch SDPA causal, the engine's dense prefill) and one
decode step at the end of the context (sparse vs the engine's flash-decoding kernel vs SDPA). Decode times come
from CUDA graphs of 32 calls (one per layer of the 8B model), so launch overhead counts as it does in the
engine's graph-replayed decode. Whole model: bench/_engine_model.py's KernelModel (int4 weights, random) with
its dense attention vs the same model with InfLLM v2 attention (chunked prefill, graph-replayed decode), and
the peak GPU memory of the sparse run.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bench.engine import _event_ms
from bench.peers.shapes import SHAPES

SPARSE_8B = {"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 64, "window_size": 2048,
             "topk": 64, "use_nope": False, "dense_len": 8192}  # the published defaults (docs/infllm_v2.md)


def _ms(fn, reps: int = 5, warmup: int = 2) -> float:
    """Median milliseconds of fn over reps (CUDA events)."""
    return _event_ms(fn, reps, warmup)


def _graph_us(fn, calls: int = 32, reps: int = 20) -> float:
    """Microseconds per call of fn, captured `calls` times in one CUDA graph and replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return _ms(graph.replay, reps) * 1e3 / calls


def layer_bench(shape: str, ctx: int) -> dict:
    """One layer's attention at context ctx: prefill of all ctx tokens and one decode step at position ctx - 1."""
    from engine.kernels.decode_attention import decode_attention
    from engine.kernels.infllm_v2 import InfLLMParams, compress_keys, infllm_v2_attention, sparse_decode

    s, p = SHAPES[shape], InfLLMParams.from_config(SPARSE_8B)
    h, kvh, d, dev = s.heads, s.kv_heads, s.head_dim, "cuda"
    torch.manual_seed(0)
    k = torch.randn(1, kvh, ctx, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    q = torch.randn(1, h, ctx, d, device=dev, dtype=torch.bfloat16)
    ck = torch.zeros(1, kvh, p.num_windows(ctx), d, device=dev, dtype=torch.bfloat16)
    lens = torch.tensor([ctx], dtype=torch.int32, device=dev)

    def sparse_prefill():
        compress_keys(k, ck, lens, ctx // p.kernel_stride + 2, p)
        return infllm_v2_attention(q, k, v, ck, lens, p)

    out = {"context": ctx}
    out["prefill_sparse_ms"] = _ms(sparse_prefill, reps=3, warmup=1)
    out["prefill_sdpa_ms"] = _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                                 reps=3, warmup=1)
    qd = q[:, :, -1:].contiguous()  # [1, H, 1, D]: the last token decoding
    # the decode step writes its compressed key itself
    out["decode_sparse_us"] = _graph_us(lambda: infllm_v2_attention(qd, k, v, ck, lens, p, dense_len=p.dense_len))
    # the 3-launch form (forced blocks by position, chosen ones ranked and attended in one kernel), same run
    out["decode_sparse_split_us"] = _graph_us(lambda: sparse_decode(qd, k, v, ck, lens, p, dense_len=p.dense_len,
                                                                    method="split"))
    out["decode_flash_us"] = _graph_us(lambda: decode_attention(qd[:, :, 0], k, v, lens))
    out["decode_sdpa_us"] = _graph_us(lambda: F.scaled_dot_product_attention(qd, k, v, enable_gqa=True))
    out["prefill_speedup_vs_sdpa"] = out["prefill_sdpa_ms"] / out["prefill_sparse_ms"]
    out["decode_speedup_vs_flash"] = out["decode_flash_us"] / out["decode_sparse_us"]
    out["decode_speedup_vs_sdpa"] = out["decode_sdpa_us"] / out["decode_sparse_us"]
    del k, v, q, ck
    torch.cuda.empty_cache()
    return out


def breakdown(shape: str, ctx: int, chunk: int = 8192) -> dict:
    """GPU time per kernel (torch.profiler) of one sparse decode step and of the last `chunk`-token prefill chunk
    at context ctx, one layer: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    from engine.kernels.infllm_v2 import InfLLMParams, compress_keys, infllm_v2_attention

    s, p = SHAPES[shape], InfLLMParams.from_config(SPARSE_8B)
    torch.manual_seed(0)
    k = torch.randn(1, s.kv_heads, ctx, s.head_dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    q = torch.randn(1, s.heads, chunk, s.head_dim, device="cuda", dtype=torch.bfloat16)
    ck = torch.zeros(1, s.kv_heads, p.num_windows(ctx), s.head_dim, device="cuda", dtype=torch.bfloat16)
    lens = torch.tensor([ctx], dtype=torch.int32, device="cuda")
    compress_keys(k, ck, lens, ctx // p.kernel_stride + 2, p)
    steps = {"decode": lambda: infllm_v2_attention(q[:, :, -1:].contiguous(), k, v, ck, lens, p,
                                                   dense_len=p.dense_len),
             "prefill_chunk": lambda: infllm_v2_attention(q, k, v, ck, lens, p)}
    out = {}
    for name, fn in steps.items():
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        out[name] = {e.key[:60]: round(e.device_time_total, 1) for e in prof.key_averages()
                     if e.device_time_total > 0}  # microseconds
    return out


def whole_model(shape: str, ctx: int, gen: int = 32, chunk: int = 8192) -> dict:
    """KernelModel with dense attention vs with InfLLM v2: prefill of a ctx-token prompt, graph decode after it."""
    from bench._engine_model import KernelModel

    s = SHAPES[shape]
    res = {"context": ctx}
    prompt = torch.randint(0, s.vocab, (1, ctx), device="cuda")
    for name in ("dense", "sparse"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        if name == "dense":
            model = KernelModel(s, "int4", 1, ctx + gen + 16)
        else:
            model = sparse_kernel_model(s, "int4", 1, ctx + gen + 16, SPARSE_8B, chunk)
        model.prefill(prompt[:, :SPARSE_8B["dense_len"] + 64])  # compile (both sparse chunk shapes) outside the timing
        torch.cuda.synchronize()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        first = model.prefill(prompt)
        t1.record()
        torch.cuda.synchronize()
        prefill_ms = t0.elapsed_time(t1)
        tokens, pos = first.clone(), torch.full((1,), ctx, device="cuda", dtype=torch.int32)
        graph = model.decode_graph(tokens, pos)
        tokens.copy_(first)
        pos.fill_(ctx)
        step_ms = _ms(lambda: [graph.replay() for _ in range(gen)], reps=1, warmup=0) / gen
        res[name] = {"prefill_ms": prefill_ms, "prefill_tok_s": ctx / prefill_ms * 1e3, "decode_ms": step_ms,
                     "decode_tok_s": 1e3 / step_ms, "peak_GB": torch.cuda.max_memory_allocated() / 1e9}
        del model, graph
    res["prefill_speedup"] = res["dense"]["prefill_ms"] / res["sparse"]["prefill_ms"]
    res["decode_speedup"] = res["dense"]["decode_ms"] / res["sparse"]["decode_ms"]
    return res


def sparse_kernel_model(s, quant: str, batch: int, max_len: int, sparse: dict, chunk: int):
    """KernelModel (bench/_engine_model.py) with InfLLM v2 attention: the same layers, attention swapped, prefill
    in chunks of `chunk` tokens (sparse for prompts of dense_len tokens or more, as the published code decides
    for a whole prompt), decode always sparse (this bench decodes past dense_len)."""
    from bench._engine_model import KernelModel
    from engine.kernels.infllm_v2 import InfLLMParams, compress_keys, infllm_v2_attention
    from engine.kernels.rmsnorm import rms_norm
    from engine.kernels.rotary import rotary_kv

    class SparseKernelModel(KernelModel):
        def __init__(self):
            super().__init__(s, quant, batch, max_len)
            self.p = InfLLMParams.from_config(sparse)
            self.ck = torch.zeros(s.layers, batch, s.kv_heads, self.p.num_windows(max_len), s.head_dim,
                                  device="cuda", dtype=torch.bfloat16)
            self.start, self.sparse_prefill = 0, True

        def _attend(self, i, q, decode, pos):
            kc, vc, ck, p = self.kv[i, 0], self.kv[i, 1], self.ck[i], self.p
            if decode:  # q [B, H, D]; the engine's on-device dense switch, as SparseAttention decodes
                lens = (pos + 1).to(torch.int32)  # the decode step writes its compressed key itself
                return infllm_v2_attention(q.unsqueeze(2), kc, vc, ck, lens, p, dense_len=p.dense_len)[:, :, 0]
            t = q.shape[0]  # one sequence, tokens start .. start + t - 1
            e = self.start + t
            lens = torch.full((1,), e, dtype=torch.int32, device=q.device)
            compress_keys(kc[:1], ck[:1], lens, t // p.kernel_stride + 2, p)
            qq = q.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
            if not self.sparse_prefill:
                return F.scaled_dot_product_attention(qq, kc[:1, :, :e], vc[:1, :, :e], is_causal=True,
                                                      enable_gqa=True)[0].transpose(0, 1)
            return infllm_v2_attention(qq, kc[:1], vc[:1], ck[:1], lens, p)[0].transpose(0, 1)

        def forward(self, tokens, pos, bidx, decode):  # KernelModel.forward with _attend for attention
            sh, d = self.s, self.s.head_dim
            t = tokens.shape[0]
            cos, sin = self.cos[pos], self.sin[pos]
            x_dtype = torch.float32 if (self.quant == "int4" and t == 1) else torch.bfloat16
            h = F.embedding(tokens, self.embed)
            out = None
            for i, lyr in enumerate(self.layers):
                xn, h = rms_norm(h if out is None else out, lyr["n1"], sh.eps, None if out is None else h, x_dtype)
                qkv = self._linear(xn, lyr["qkv"]).view(t, sh.heads + 2 * sh.kv_heads, d)
                q, k, v = qkv[:, :sh.heads], qkv[:, sh.heads:sh.heads + sh.kv_heads], qkv[:, sh.heads + sh.kv_heads:]
                rotary_kv(q, k, v, cos, sin, self.kv[i, 0], self.kv[i, 1], bidx, pos)
                a = self._attend(i, q, decode, pos)
                o = self._linear(a.reshape(t, sh.heads * d), lyr["o"])
                xn, h = rms_norm(o, lyr["n2"], sh.eps, h, x_dtype)
                out = self._linear(self._linear(xn, lyr["gu"], swiglu_out=True, out_dtype=x_dtype), lyr["down"])
            return rms_norm(out, self.norm, sh.eps, h)[0]

        def prefill(self, prompts):  # batch 1, chunked
            n = prompts.shape[1]
            self.sparse_prefill = n >= self.p.dense_len
            hidden = None
            for a in range(0, n, chunk):
                e = min(a + chunk, n)
                self.start = a
                pos = torch.arange(a, e, device=prompts.device, dtype=torch.int32)
                bidx = torch.zeros(e - a, device=prompts.device, dtype=torch.int32)
                hidden = self.forward(prompts[0, a:e], pos, bidx, decode=False)
            return self.logits(hidden[-1:]).argmax(-1)

    return SparseKernelModel()


def _ctx(text: str) -> int:
    text = text.strip().lower()
    return int(text[:-1]) * 1024 if text.endswith("k") else int(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cpm bench attention", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--context", default="32k,64k,128k", help="comma-separated contexts for the per-layer bench")
    ap.add_argument("--whole-model", default="128k", help="context of the whole-model run ('' to skip)")
    ap.add_argument("--breakdown", action="store_true", help="GPU time per kernel of a decode step and a prefill "
                    "chunk at the largest context")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        from engine.errors import EngineError

        raise EngineError("cpm bench attention needs a CUDA GPU (the kernels are timed on it)")
    result = {"device": torch.cuda.get_device_name(), "shape": args.shape, "sparse_config": SPARSE_8B,
              "layer": [layer_bench(args.shape, _ctx(c)) for c in args.context.split(",") if c]}
    if args.breakdown:
        result["breakdown"] = breakdown(args.shape, max(_ctx(c) for c in args.context.split(",") if c))
    if args.whole_model:
        result["whole_model"] = whole_model(args.shape, _ctx(args.whole_model))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for r in result["layer"]:
            print(f"ctx {r['context']:>7}: prefill sparse {r['prefill_sparse_ms']:8.2f} ms  sdpa "
                  f"{r['prefill_sdpa_ms']:8.2f} ms | decode sparse {r['decode_sparse_us']:6.1f} us  flash "
                  f"{r['decode_flash_us']:6.1f} us  sdpa {r['decode_sdpa_us']:6.1f} us")
        for key in ("breakdown", "whole_model"):
            if key in result:
                print(json.dumps(result[key], indent=1))
    return 0
