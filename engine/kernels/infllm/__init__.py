"""The InfLLM v2 kernel family (MiniCPM4's sparse attention), one part a file: `reference` (parameters and the
PyTorch references), `shared` (jit pieces, merge, grid barrier), `compress`, `select` (prefill top-k), `prefill`
(stage 2 over a selection), `decode` (the graph-safe decode step). Entry points: `engine.kernels.infllm_v2`.
Importing this package imports nothing.
"""
