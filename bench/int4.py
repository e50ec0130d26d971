"""`cpm bench int4`: the int4 matmul kernels at a model's layer shapes, for M rows of x, beside tinygemm int4 and
cuBLAS bf16 timed in the same process; `--chain` times a decode step's chain of GEMVs with and without PDL.

    cpm bench int4 [--shape {8b,0.5b,smollm2}] [--m 1,2,4,8,16,32,64] [--layers qkv,o,gate_up,down]
                   [--sweep 1,16] [--gemv2-sweep] [--chain] [--sass] [--json]

Every kernel runs over enough weight copies to overflow the 60 MB L2, inside a CUDA graph (launch gaps not
counted), median of 20 replays (bench/_engine_micro.py). GB/s counts the int4 codes plus bf16 scales and mins
(cuBLAS: its bf16 weight); `frac` is that over the device copy bandwidth measured in the same run. x is bf16 (what
a bf16 decode step passes). Each shape is checked against `int4_matmul_ref` first. For M = 1 both GEMVs are timed
(`gemv2`: the split-K one `int4_matmul` takes, `gemv1`: the first form); for M > 1 the FMA GEMV and the
tensor-core kernel (`use_gemv` picks one).
`--sweep M,..` also times every `_mma_kernel` config at those M, with the PTX nibble unpacking and the plain one.
`--sass` (no GPU needed): the split-K GEMV compiled for sm_90 by Triton's own ptxas with each 8B layer's shipped
config; registers and the main loop's instruction mix (docs/kernels.md).
`--chain`: all layers' four matmuls in decode order (norm prologues, residual and SwiGLU epilogues, fp32
activations between them, as engine/model.py's fused step) captured in one CUDA graph, us a call: PDL off
(`off`), on for the M = 1 GEMV only (`m1`, the default), and on for the small-M kernels too (`all`).
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F

from bench.peers.shapes import SHAPES

# SmolLM2-135M (the default model alias): hidden 576, 9 heads of 64 (3 KV heads), MLP 1536, 30 layers, GGUF Q4_1
# blocks of 32 (the group size)
SMOLLM2 = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536)}
SMOLLM2_LAYERS, SMOLLM2_GROUP = 30, 32


def layer_shapes(shape: str) -> dict[str, tuple[int, int]]:
    """(N, K) of the four int4 projections of one layer (qkv fused, gate|up fused)."""
    if shape == "smollm2":
        return dict(SMOLLM2)
    s = SHAPES[shape]
    qkv = (s.heads + 2 * s.kv_heads) * s.head_dim
    return {"qkv": (qkv, s.hidden), "o": (s.hidden, s.heads * s.head_dim), "gate_up": (2 * s.inter, s.hidden),
            "down": (s.hidden, s.inter)}


def group_size(shape: str) -> int:
    return SMOLLM2_GROUP if shape == "smollm2" else 128


def _tinygemm(n: int, k: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tinygemm int4 weight as torch's `_weight_int4pack_mm` takes it (K tiles of 16 x 8, 4 or 2)."""
    codes = torch.randint(0, 256, (n, k // 2), device="cuda", dtype=torch.uint8)
    inner = next(t for t in (8, 4, 2) if k % (16 * t) == 0)
    packed = torch.ops.aten._convert_weight_to_int4pack(codes, inner)
    sz = torch.stack([torch.rand(k // group, n, device="cuda") * 0.004 + 0.001,
                      torch.randn(k // group, n, device="cuda") * 0.001], -1).to(torch.bfloat16)
    return packed, sz


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _sweep_configs() -> list[dict]:
    from engine.kernels.int4_matmul import _mma_configs

    return [dict(c.kwargs, num_warps=c.num_warps) for c in _mma_configs()]


# `--gemv2-sweep`: the split-K GEMV's configs timed one by one at M = 1 (the sm_90 table in
# engine/kernels/int4/gemv_splitk.py came from such a sweep on an H200; an H100 may want others)
GEMV2_SWEEP = [dict(BN=bn, BK=bk, SPLIT=sp, num_warps=w, **({"maxnreg": r} if r else {}))
               for bn, bk, sp, w, r in [(8, 1024, 1, 4, 64), (16, 512, 1, 2, None), (16, 512, 4, 2, None),
                                        (16, 1024, 1, 4, None), (16, 1024, 2, 4, None), (32, 256, 1, 4, None),
                                        (8, 512, 2, 2, 64), (16, 256, 4, 2, None),
                                        # gate_up (norm + SwiGLU) compiles to 127 registers, 8 programs an SM; capped
                                        # at 72-80 ptxas spills nothing (sm_90, Triton 3.9): 12-14 programs an SM
                                        (16, 512, 1, 2, 80), (16, 512, 1, 2, 72), (16, 512, 2, 2, 72)]]


def _gemv2_sweep(name: str, x: torch.Tensor, ours: list, copies: int) -> dict:
    """us a call of `_gemv2` with the layer's engine epilogue (norm prologue for qkv and gate_up, SwiGLU for
    gate_up, residual for o and down) for the shipped config and each GEMV2_SWEEP config (NaN where one fails
    or misses the reference)."""
    from bench._engine_micro import _graph_ms
    from engine.kernels import int4_matmul as K

    n, k = ours[0].shape
    norm = (torch.rand(k, device="cuda") + 0.5, 1e-5) if name in ("qkv", "gate_up") else None
    swiglu = name == "gate_up"
    res = torch.randn(1, n, device="cuda", dtype=x.dtype) if name in ("o", "down") else None
    out = torch.empty(1, n // 2 if swiglu else n, device="cuda", dtype=x.dtype)
    xr = x
    if norm is not None:
        xf = x.float()
        xr = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm[1]) * norm[0]).to(x.dtype)
    ref = K.int4_matmul_ref(xr, ours[0], residual=res, swiglu=swiglu)
    timings = {}
    for cfg in [{}] + GEMV2_SWEEP:
        label = "_".join(f"{k}{v}" for k, v in cfg.items()) or "shipped"
        try:
            K._gemv2(x, ours[0], out, res, swiglu, norm, **cfg)
            ok = _rel_err(out, ref) < 1e-2
            timings[label] = _graph_ms(lambda: [K._gemv2(x, w, out, res, swiglu, norm, **cfg) for w in ours]) \
                / copies * 1e3 if ok else float("nan")
        except Exception as e:  # a config that does not compile is reported, not fatal
            print(f"      {label}: {type(e).__name__}: {str(e)[:80]}", flush=True)
            timings[label] = float("nan")
    return timings


def sass_report(shape: str) -> list[dict]:
    """Compile the split-K GEMV for sm_90 with each layer's shipped config (no GPU needed: Triton's own ptxas and
    cuobjdump) and count the main loop's SASS instructions by opcode, registers from the cubin."""
    import collections
    import re
    import subprocess

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from engine.kernels.int4 import gemv_splitk as G

    fn, rows = G._gemv2_kernel.fn.fn, []
    names = list(fn.arg_names)
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    epi = {"qkv": (True, False, False), "o": (False, False, True), "gate_up": (True, True, False),
           "down": (False, False, True)}  # NORM, SWIGLU, RESIDUAL as the engine calls them
    for layer, (n, k) in layer_shapes(shape).items():
        meta = dict(G._GEMV2_TUNED.get((n, k, group_size(shape)), dict(BN=16, BK=512, SPLIT=1, num_warps=2)))
        norm, swiglu, res = epi[layer]
        consts = dict(G=group_size(shape), SWIGLU=swiglu, RESIDUAL=res, NORM=norm, PAIRS=True, PDL=True,
                      BN=meta["BN"], BK=meta["BK"], SPLIT=meta["SPLIT"],
                      EVEN=n % meta["BN"] == 0 and (k // 8) % (meta["SPLIT"] * meta["BK"] // 8) == 0)
        sig = {"x_ptr": "*bf16", "q_ptr": "*i32", "s_ptr": "*bf16", "m_ptr": "*bf16", "out_ptr": "*bf16",
               "res_ptr": "*bf16", "nw_ptr": "*fp32", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "eps": "fp32",
               "one": "i32", "N": "i32", "K": "i32", **{c: "constexpr" for c in consts}}
        aligned = [a for a in names if a.endswith("_ptr")] + ["N", "K"]
        src = ASTSource(fn=fn, signature={a: sig[a] for a in names},
                        constexprs={(names.index(c),): v for c, v in consts.items()},
                        attrs={(names.index(a),): [["tt.divisibility", 16]] for a in aligned})
        opts = {"num_warps": meta["num_warps"], "num_stages": 1, **({"maxnreg": meta["maxnreg"]} if "maxnreg" in meta else {})}
        kern = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
        cubin = f"/tmp/cpm_gemv2_{layer}.cubin"
        with open(cubin, "wb") as f:
            f.write(kern.asm["cubin"])
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", cubin], capture_output=True, text=True).stdout
        code = [(int(m.group(1), 16), m.group(3)) for m in
                re.finditer(r"/\*([0-9a-f]{4})\*/\s+(@!?P\d\s+)?([A-Z0-9_.]+)([^;]*);", sass)]
        loops = [(int(t, 16), a) for a, op in code if op == "BRA"
                 for t in re.findall(r"BRA\s+0x([0-9a-f]+)", sass[sass.index(f"/*{a:04x}*/"):].split(";")[0])
                 if int(t, 16) < a]
        lo, hi = max(loops, key=lambda r: r[1] - r[0])  # the main loop: the longest backward branch
        ops = collections.Counter(op for a, op in code if lo <= a <= hi)
        trip = sum(ops.values())
        row = {"layer": layer, "config": meta, "registers": int(re.search(r"REG:(\d+)", usage).group(1)),
               "loop_instructions": trip, "codes_a_trip": meta["BN"] * 8, "per_code": trip / (meta["BN"] * 8),
               "ops": dict(ops.most_common())}
        rows.append(row)
        print(f"  {layer:<8} {row['registers']:>4} regs  loop {trip} instructions / {row['codes_a_trip']} codes = "
              f"{row['per_code']:.2f} a code  " + " ".join(f"{o} {c}" for o, c in ops.most_common(6)), flush=True)
    return rows


def bench_shape(name: str, n: int, k: int, ms: list[int], copy_gbps: float, sweep_ms: list[int],
                group: int = 128, gemv2_sweep: bool = False) -> list[dict]:
    from bench._engine_micro import _graph_ms
    from bench._engine_model import random_int4
    from engine.kernels import int4_matmul as K

    q_bytes = n * k // 2 + 2 * 2 * n * k // group
    copies = max(2, (256 << 20) // q_bytes)  # >= 256 MB of weights: far past the L2
    ours = [random_int4(n, k, group, "cuda") for _ in range(copies)]
    tiny = [_tinygemm(n, k, group) for _ in range(copies)]
    dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(max(2, copies // 4))]
    rows = []
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        err = _rel_err(K.int4_matmul(x, ours[0]), K.int4_matmul_ref(x, ours[0]))
        t_ours = _graph_ms(lambda: [K.int4_matmul(x, w) for w in ours]) / copies
        t_tiny = _graph_ms(lambda: [torch.ops.aten._weight_int4pack_mm(x, p, group, sz) for p, sz in tiny]) / copies
        t_bf16 = _graph_ms(lambda: [F.linear(x, w) for w in dense]) / len(dense)
        row = {"layer": name, "N": n, "K": k, "M": m, "rel_err": err, "ours_us": t_ours * 1e3,
               "tinygemm_us": t_tiny * 1e3, "cublas_bf16_us": t_bf16 * 1e3,
               "ours_frac": q_bytes / t_ours / 1e6 / copy_gbps, "tinygemm_frac": q_bytes / t_tiny / 1e6 / copy_gbps,
               "cublas_frac": 2 * n * k / t_bf16 / 1e6 / copy_gbps}
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        if m == 1:  # both M = 1 GEMVs
            paths = [("gemv2", lambda w: K._gemv2(x, w, out, None, False, None)),
                     ("gemv1", lambda w: K._gemv(x, w, out, None, False, None))]
        else:  # both small-M paths, whichever use_gemv picks
            paths = [("mma", lambda w: K._mma(x, w, out, None, False, None, f32_dot=False))]
            if m <= K.GEMV_MAX_M:
                paths.append(("gemv", lambda w: K._gemv(x, w, out, None, False, None)))
        for path, launch in paths:
            launch(ours[0])
            row[f"{path}_err"] = _rel_err(out, K.int4_matmul_ref(x, ours[0]))
            row[f"{path}_us"] = _graph_ms(lambda: [launch(w) for w in ours]) / copies * 1e3
        if m == 1 and gemv2_sweep:
            row["gemv2_sweep"] = sw = _gemv2_sweep(name, x, ours, copies)
            best = sorted((t, lab) for lab, t in sw.items() if t == t)[:4]
            print(f"      {name} gemv2 with its epilogue: shipped {sw['shipped']:.2f} us; best: "
                  + ", ".join(f"{lab} {t:.2f}" for t, lab in best), flush=True)
        sweep = m in sweep_ms
        if sweep:
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            row["sweep"] = {}
            for cfg in _sweep_configs():
                for asm in (True, False):
                    def run(cfg=cfg, asm=asm):
                        for w in ours:
                            K._mma(x, w, out, None, False, None, f32_dot=False, asm=asm, **cfg)
                    label = (f"BN{cfg['BN']}_S{cfg['SPLIT']}_st{cfg['STAGES']}_w{cfg['num_warps']}_"
                             f"{'asm' if asm else 'plain'}")
                    try:
                        run()
                        ok = _rel_err(out, K.int4_matmul_ref(x, ours[-1])) < 1e-2
                        row["sweep"][label] = (_graph_ms(run) / copies * 1e3, ok)
                    except Exception as e:  # a config that does not compile is reported, not fatal
                        row["sweep"][label] = (float("nan"), f"{type(e).__name__}: {str(e)[:80]}")
        rows.append(row)
        print(f"  {name:<8}{n:>6}{k:>6} M={m:<3} | ours {row['ours_us']:7.1f} us ({row['ours_frac']:4.0%}) err "
              f"{err:.1e} | tinygemm {row['tinygemm_us']:7.1f} ({row['tinygemm_frac']:4.0%}) | cuBLAS bf16 "
              f"{row['cublas_bf16_us']:7.1f} ({row['cublas_frac']:4.0%})"
              + "".join(f" | {p} {row[p + '_us']:6.1f}" for p in ("gemv2", "gemv1", "gemv", "mma") if p + "_us" in row),
              flush=True)
        if sweep:
            best = sorted((v[0], lab) for lab, v in row["sweep"].items() if v[1] is True)[:4]
            print("      best configs: " + ", ".join(f"{lab} {t:.1f}" for t, lab in best), flush=True)
    del ours, tiny, dense
    torch.cuda.empty_cache()
    return rows


def chain_rows(shape: str, ms: list[int], layers: int | None = None) -> list[dict]:
    """Per-call us of a decode step's int4 chain in one CUDA graph, for each M and PDL mode (module doc)."""
    from bench._engine_micro import _graph_ms
    from bench._engine_model import random_int4
    from engine.kernels import int4_matmul as K
    from engine.kernels.int4 import layout as L

    sh, g = layer_shapes(shape), group_size(shape)
    hidden, q_dim = sh["o"]
    n_layers = layers or (SMOLLM2_LAYERS if shape == "smollm2" else SHAPES[shape].layers)
    ws = [{name: random_int4(n, k, g, "cuda") for name, (n, k) in sh.items()} for _ in range(n_layers)]
    norm = (torch.rand(hidden, device="cuda") + 0.5, 1e-5)

    def step(h):
        for w in ws:
            qkv = K.int4_matmul(h, w["qkv"], norm=norm, out_dtype=torch.float32)
            h = K.int4_matmul(qkv[:, :q_dim], w["o"], residual=h)
            a = K.int4_matmul(h, w["gate_up"], swiglu=True, norm=norm, out_dtype=torch.float32)
            h = K.int4_matmul(a, w["down"], residual=h)
        return h

    rows, small_m_default = [], L.PDL_SMALL_M
    for m in ms:
        h = torch.randn(m, hidden, device="cuda")
        row = {"shape": shape, "M": m, "layers": n_layers, "calls": 4 * n_layers}
        os.environ["CPM_PDL"] = "0"
        ref = step(h)
        for mode, pdl_on, small_m in (("off", False, False), ("m1", True, False), ("all", True, True)):
            os.environ["CPM_PDL"] = "1" if pdl_on else "0"
            L.PDL_SMALL_M = small_m
            out = {}
            t = _graph_ms(lambda: out.__setitem__("h", step(h)))  # the captured outputs: compared after a replay
            row[f"{mode}_us"] = t * 1e3 / row["calls"]
            row[f"{mode}_err"] = ((out["h"] - ref).norm() / ref.norm()).item()
        rows.append(row)
        print(f"  chain {shape} M={m} {row['calls']} calls: us a call  " + "  ".join(
            f"{mode} {row[mode + '_us']:.2f} (err {row[mode + '_err']:.0e})" for mode in ("off", "m1", "all")),
            flush=True)
    os.environ.pop("CPM_PDL")
    L.PDL_SMALL_M = small_m_default
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cpm bench int4", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES) + ["smollm2"], default="8b")
    ap.add_argument("--m", default="1,2,4,8,16,32,64", help="comma-separated row counts of x")
    ap.add_argument("--layers", default="qkv,o,gate_up,down")
    ap.add_argument("--sweep", default="", help="comma-separated M at which to time every tensor-core config")
    ap.add_argument("--gemv2-sweep", action="store_true", help="also time every split-K GEMV config at M = 1")
    ap.add_argument("--sass", action="store_true", help="no GPU needed: the split-K GEMV's sm_90 SASS per layer "
                    "(registers, main-loop instruction mix)")
    ap.add_argument("--chain", action="store_true", help="time the decode chain with and without PDL instead")
    ap.add_argument("--chain-layers", type=int, default=None, help="layers in the chain (default: the model's)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.sass:
        rows = sass_report(a.shape)
        if a.json:
            print(json.dumps({"shape": a.shape, "target": "sm_90", "sass": rows}))
        return 0
    if not torch.cuda.is_available():
        from engine.errors import EngineError

        raise EngineError("cpm bench int4 needs a CUDA GPU (the kernels are Triton on CUDA)")
    ms = [int(v) for v in a.m.split(",")]
    if a.chain:
        rows = chain_rows(a.shape, ms, a.chain_layers)
        if a.json:
            print(json.dumps({"device": torch.cuda.get_device_name(), "shape": a.shape, "chain": rows}))
        return 0
    from bench.engine import measure_ceilings

    ceil = measure_ceilings()
    print(f"{torch.cuda.get_device_name()}: copy {ceil['copy_GBps']:.0f} GB/s", flush=True)
    rows = []
    for name in a.layers.split(","):
        n, k = layer_shapes(a.shape)[name]
        rows += bench_shape(name, n, k, ms, ceil["copy_GBps"], [int(v) for v in a.sweep.split(",") if v],
                            group_size(a.shape), a.gemv2_sweep)
    if a.json:
        print(json.dumps({"device": torch.cuda.get_device_name(), "ceilings": ceil, "shape": a.shape, "rows": rows}))
    return 0
