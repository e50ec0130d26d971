"""The 8B batch-1 int4 GEMVs (qkv + norm, o + residual, gate_up + norm + SwiGLU, down + residual: the engine's
four calls a layer) once each between cudaProfilerStart/Stop, for Nsight Compute:

    ncu --clock-control none --profile-from-start off --set full -o OUT/gemv python3 bench/device_gemv_profile.py

Everything before the profiled region (compilation, autotuning, warm-up) is outside it. `--tinygemm` adds
torch's tinygemm int4 kernel at the same shapes (the peer) to the profiled region. Prints each call's error
against `int4_matmul_ref` first (a profile of a wrong kernel is worth nothing).
"""
from __future__ import annotations

import sys

import torch

from bench._engine_model import random_int4
from bench.int4 import _rel_err, _tinygemm, layer_shapes
from engine.kernels import int4_matmul as K


def main(argv: list[str]) -> int:
    shape = "8b"
    sh = layer_shapes(shape)
    torch.manual_seed(0)
    ws = {name: random_int4(n, k, 128, "cuda") for name, (n, k) in sh.items()}
    hidden = sh["o"][0]
    norm = (torch.rand(hidden, device="cuda") + 0.5, 1e-5)
    x = torch.randn(1, hidden, device="cuda", dtype=torch.bfloat16)
    a = torch.randn(1, sh["down"][1], device="cuda", dtype=torch.bfloat16)
    q_in = torch.randn(1, sh["o"][1], device="cuda", dtype=torch.bfloat16)
    res = torch.randn(1, hidden, device="cuda", dtype=torch.bfloat16)
    calls = {
        "qkv": lambda: K.int4_matmul(x, ws["qkv"], norm=norm),
        "o": lambda: K.int4_matmul(q_in, ws["o"], residual=res),
        "gate_up": lambda: K.int4_matmul(x, ws["gate_up"], swiglu=True, norm=norm),
        "down": lambda: K.int4_matmul(a, ws["down"], residual=res),
    }
    xf = x.float()
    xn = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm[1]) * norm[0]).to(x.dtype)
    refs = {
        "qkv": lambda: K.int4_matmul_ref(xn, ws["qkv"]),
        "o": lambda: K.int4_matmul_ref(q_in, ws["o"], residual=res),
        "gate_up": lambda: K.int4_matmul_ref(xn, ws["gate_up"], swiglu=True),
        "down": lambda: K.int4_matmul_ref(a, ws["down"], residual=res),
    }
    for name, fn in calls.items():
        for _ in range(3):
            fn()
        print(f"{name}: rel err vs reference {_rel_err(fn(), refs[name]()):.2e}", flush=True)
    tiny = {}
    if "--tinygemm" in argv:
        for name in ("gate_up", "down"):
            n, k = sh[name]
            tiny[name] = _tinygemm(n, k, 128)
            xi = x if name == "gate_up" else a
            torch.ops.aten._weight_int4pack_mm(xi, *tiny[name][:1], 128, tiny[name][1])
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for fn in calls.values():
        fn()
    for name, (p, sz) in tiny.items():
        torch.ops.aten._weight_int4pack_mm(x if name == "gate_up" else a, p, 128, sz)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
