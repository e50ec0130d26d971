"""Triton kernels, one family a file, each beside a PyTorch reference of the same signature (docs/kernels.md).

Nothing is imported here: importing a family imports Triton, which callers do only on the CUDA path.
"""
