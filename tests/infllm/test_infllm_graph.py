"""The sparse decode step captured in a CUDA graph (GPU only): built the way engine/cuda_graph.py's
DecodeGraph._step builds it (positions and lengths on the device, attention over the whole cache capacity),
with the InfLLM v2 backend in the StepContext; replays match eager decode on both sides of dense_len."""
from __future__ import annotations

import pytest
import torch

from engine.attention import SparseAttention
from engine.model import StepContext
from tests.infllm.tiny_sparse import tiny_runner

PROMPT = [(5 * i + 1) % 320 for i in range(40)]  # decoding from 40 crosses dense_len (64) after 24 steps


def _captured_step(runner):
    """A graph of one decode step of row 0 over static (token, pos) buffers -> (graph, tokens, pos, logits)."""
    tokens = torch.zeros(1, 1, dtype=torch.long, device="cuda")
    pos = torch.zeros(1, dtype=torch.long, device="cuda")
    out = {}

    def step():
        ctx = StepContext(pos=pos, kv_len=runner.cache.max_seq_len, cos=runner.cos[pos][:, None],
                          sin=runner.sin[pos][:, None], attn=runner.attn, lengths=(pos + 1).to(torch.int32))
        out["logits"] = runner.model(tokens, ctx, runner.cache)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # compile outside the capture; writes position 0's K/V, which the prefill overwrites
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        step()
    return graph, tokens, pos, out


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["auto", "sparse"])
def test_sparse_decode_replays_in_a_cuda_graph(mode):
    with torch.inference_mode():
        eager, graphed = tiny_runner("cuda", max_seq_len=256), tiny_runner("cuda", max_seq_len=256)
        for r in (eager, graphed):
            m = r.model
            r.attn = SparseAttention(m.cfg, 1, r.cache.max_seq_len, m.device, m.dtype, mode, "kernel")
            assert r.attn.graph_safe
        graph, tokens, pos, out = _captured_step(graphed)
        graphed.attn.ck.zero_()
        logits_e, logits_g = eager.prefill(PROMPT), graphed.prefill(PROMPT)
        for i in range(60):
            tok = int(logits_e.argmax(-1)[0])
            logits_e = eager.decode_one(tok, len(PROMPT) + i)
            tokens.fill_(tok)
            pos.fill_(len(PROMPT) + i)
            graph.replay()
            logits_g = out["logits"]
            assert (logits_g.float() - logits_e.float()).abs().max().item() < 1e-3, i
