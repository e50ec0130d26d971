"""The int4 (w4a16) kernel family, one kernel form a file, each beside the shared reference:
`layout` (the packed layout, `int4_matmul_ref`, shared `@triton.jit` pieces, PDL switches), `gemv` (FMA GEMV,
first form, and its rows variant), `gemv_splitk` (the 8B M = 1 GEMV), `mma` (tensor cores, 2 <= M < 256),
`dequant` (prefill: dense copy for cuBLAS). The entry points and the dispatch by M are
`engine.kernels.int4_matmul` (`int4_matmul`, `int4_linear`). Importing this package imports nothing.
"""
