"""Programmatic dependent launch (PDL): let the next kernel of a decode step start while this one drains.

Why: a small model's decode step is ~170 kernels of 2-3 us each, and a good part of each is the gap between one
kernel's last write and the next one's first load. On Hopper, a kernel launched with PDL may start as soon as
every program of the kernel before it has called `launch_dependents` (or exited); it runs up to `wait`, which
blocks until the kernel before has finished and its writes are visible. Loads that no earlier kernel writes (the
weights) can be issued before `wait`, so they overlap the previous kernel's tail.

Rules for a kernel that takes part (`PDL: tl.constexpr` argument, launched with `**launch_kwargs(PDL)`):
- before `wait(PDL)` it reads only what no kernel of the step writes (weights, constants) and writes nothing
  (the kernel before may still be reading the buffer);
- EVERY program calls `wait(PDL)` before it exits, even one with nothing to do: the kernel after waits only for
  this one, so this one must not finish before the one before it did;
- `launch_dependents(PDL)` may come anywhere (early is the point); it only lets the next kernel be scheduled.
Kernels without PDL (cuBLAS, torch ops) need nothing: a kernel after them starts when they finish.
CUDA graphs keep the programmatic edges (stream capture turns the launch attribute into a graph edge).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

try:  # Triton >= 3.3; older Triton has no grid dependency control, and PDL stays off
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    _HAVE_GDC = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    _HAVE_GDC = False


def enabled(device: torch.device | str | None = None) -> bool:
    """True where PDL can be used: a Hopper-or-newer CUDA device, Triton with grid dependency control, not the
    CPU interpreter, and not switched off with CPM_PDL=0."""
    if not _HAVE_GDC or os.environ.get("CPM_PDL", "1") == "0" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    if not torch.cuda.is_available():
        return False
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        return False
    return torch.cuda.get_device_capability(dev)[0] >= 9


def launch_kwargs(pdl: bool) -> dict:
    """Extra launch arguments for a kernel taking part: `kernel[grid](..., PDL=pdl, **launch_kwargs(pdl))`."""
    return {"launch_pdl": True} if pdl else {}


if _HAVE_GDC:

    @triton.jit
    def wait(PDL: tl.constexpr):
        """Block until the kernel before has finished and its writes are visible (no-op without PDL)."""
        if PDL:
            gdc_wait()

    @triton.jit
    def launch_dependents(PDL: tl.constexpr):
        """Let the next kernel be scheduled now (no-op without PDL)."""
        if PDL:
            gdc_launch_dependents()

else:  # pragma: no cover - depends on the installed Triton

    @triton.jit
    def wait(PDL: tl.constexpr):
        pass

    @triton.jit
    def launch_dependents(PDL: tl.constexpr):
        pass
