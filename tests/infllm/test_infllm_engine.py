"""The InfLLM v2 backend inside the real runner: a tiny random MiniCPM4-shaped model with a sparse_config."""
from __future__ import annotations

import pytest
import torch

from engine.attention import SparseAttention
from engine.errors import EngineError
from tests.infllm.tiny_sparse import greedy, teacher_forced, tiny_runner

PROMPT = [(7 * i + 3) % 320 for i in range(90)]  # 90 tokens: prefill already past dense_len (64)


def _backend(runner, mode="auto", impl="auto"):
    m = runner.model
    return SparseAttention(m.cfg, 1, runner.cache.max_seq_len, m.device, m.dtype, mode, impl)


def test_topk_covering_every_block_generates_like_dense():
    dense = tiny_runner(sparse={"topk": 64})
    ids_dense, logits_dense = greedy(dense, PROMPT, 24)
    sparse = tiny_runner(sparse={"topk": 64})
    sparse.attn = _backend(sparse, "sparse")
    ids, logits = greedy(sparse, PROMPT, 24)
    assert ids == ids_dense
    assert (logits - logits_dense).abs().max().item() < 1e-3


def test_sparse_path_takes_effect_past_dense_len_only():
    dense = tiny_runner()
    _, logits_dense = greedy(dense, PROMPT[:40], 100)  # crosses dense_len = 64 while decoding
    auto = tiny_runner()
    auto.attn = _backend(auto, "auto")
    _, logits = greedy(auto, PROMPT[:40], 100)
    diff = (logits - logits_dense).abs().amax(-1)  # step k attends 40 + k tokens
    assert diff[:64 - 40].max().item() < 1e-4  # below dense_len: the dense path
    assert diff[64 - 40:96 - 40].max().item() < 1e-4  # sparse, but top-6 still covers every block (<= 6)
    assert diff[120 - 40:].max().item() > 1e-3  # 8+ blocks, 6 kept: a different computation


def test_forced_dense_mode_is_dense():
    dense = tiny_runner()
    ids_dense, _ = greedy(dense, PROMPT, 8)
    forced = tiny_runner()
    forced.attn = _backend(forced, "dense")
    assert greedy(forced, PROMPT, 8)[0] == ids_dense


def test_bad_mode_and_missing_config_are_clear_errors():
    r = tiny_runner()
    with pytest.raises(EngineError, match="mode must be one of"):
        _backend(r, "fast")
    r.model.cfg.sparse_config = None
    with pytest.raises(EngineError, match="no sparse_config"):
        _backend(r, "auto")


@pytest.mark.gpu
def test_kernel_path_generates_like_reference_on_gpu():
    """Greedy through the references; the Triton path fed the same ids gives the same logits and picks the same
    token at every step (except where the reference's top two are within 1e-4: a float near-tie)."""
    ref = tiny_runner("cuda", max_seq_len=512)
    ref.attn = _backend(ref, "auto", "reference")
    ids_ref, logits_ref = greedy(ref, PROMPT, 200)
    ker = tiny_runner("cuda", max_seq_len=512)
    ker.attn = _backend(ker, "auto", "kernel")
    logits = teacher_forced(ker, PROMPT, ids_ref)
    assert (logits - logits_ref).abs().max().item() < 1e-3
    top2 = logits_ref.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert torch.equal(logits.argmax(-1)[clear], logits_ref.argmax(-1)[clear])
    assert clear.float().mean().item() > 0.9


def test_enable_sparse_plugs_into_an_engine():
    from pathlib import Path

    from engine.attention import enable_sparse
    from engine.engine import Engine

    r = tiny_runner()
    eng = Engine(r.model, None, r.model.cfg, r.model.device, r.model.dtype, r.cache.max_seq_len, 1, Path("tiny"))
    backend = enable_sparse(eng, "sparse")
    assert eng.runner.attn is backend and backend.sparse_at(1)
    direct = tiny_runner()
    direct.attn = _backend(direct, "sparse")
    assert greedy(eng.runner, PROMPT, 40)[0] == greedy(direct, PROMPT, 40)[0]
