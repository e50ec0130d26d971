"""Triton kernels, one family a file, each beside a PyTorch reference of the same signature (docs/kernels.md).

Nothing is imported here: importing a family imports Triton, which callers do only on the CUDA path.

Autotuning results are kept on disk (Triton's TRITON_CACHE_AUTOTUNING, beside its compile cache) unless the user
set that variable: the int4 kernels tune per layer shape and row count, which on a first run costs tens of
seconds (every tree size of the speculative verify graphs too), and without the disk cache every new process paid
it again. Set here because Triton reads the knob when a kernel module is imported (each @triton.autotune).
The first measurement is then kept: `TRITON_CACHE_AUTOTUNING=0` re-tunes in every process.
"""
import os

os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
