"""The engine on CUDA: tiny checkpoints against transformers, the row path's CUDA-graph decode against the
plain-PyTorch eager engine (greedy tokens equal: random MiniCPM4-shaped models, int4 and dense, batch buckets, a
cache written between replays, the attention-backend fallback), and the real smollm2-135m through the scheduler
over the paged pool (its decode graphs per bucket) against the CPU engine, concurrent vs alone, prefix hit vs
miss, and against the row path."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from engine import ops
from engine.cache import KVCache
from engine.engine import load_checkpoint
from engine.model import StepContext, Transformer
from engine.quant import Int4Weight, pack_int4
from engine.rope import rope_table
from engine.runner import Runner
from tests.tiny_weights import quantize, random_layers

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def ieee_fp32():
    """Full fp32 matmuls (no TF32), so fp32 results compare at 1e-4; kernels back on after each test."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    ops.KERNELS = True


def cuda_runner(path, dtype, int4: bool = False, max_batch: int = 2, max_seq_len: int = 64) -> Runner:
    cfg, tensors = load_checkpoint(path)
    dev = torch.device("cuda")
    model = Transformer(cfg, tensors, str(path))
    if int4:
        for block in model.blocks:
            for lin in block.linears():
                lin.weight = quantize(lin.weight)
    model.to(dev, dtype, cache_dense=False)
    cos, sin = rope_table(cfg, max_seq_len)
    return Runner(model, KVCache(cfg, max_batch, max_seq_len, dev, dtype), cos.to(dev, dtype), sin.to(dev, dtype))


def write_minicpm(path: Path, seed: int = 0) -> Path:
    """A random checkpoint in MiniCPM4's published layout and knobs (muP scales, LongRoPE, tied head, GQA,
    head_dim 64 as MiniCPM4-0.5B/8B), at a tiny width."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    H, I, L, V, nh, nkv, D = 256, 640, 3, 512, 4, 2, 64
    cfg = {"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "vocab_size": V, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "scale_emb": 12,
           "scale_depth": 1.4, "dim_model_base": 64, "hidden_act": "silu", "torch_dtype": "float32",
           "bos_token_id": 1, "eos_token_id": [2],
           "rope_scaling": {"rope_type": "longrope", "short_factor": (1 + torch.rand(D // 2, generator=g)).tolist(),
                            "long_factor": (1 + 4 * torch.rand(D // 2, generator=g)).tolist(),
                            "original_max_position_embeddings": 128}}
    t = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.1,
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g)}
    t.update(random_layers(g, L, H, I, nh, nkv, D, prefix="model.layers."))
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(t, str(path / "model.safetensors"))
    return path


def prompt(n: int, seed: int = 0, vocab: int = 512) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def greedy(r: Runner, ids: list[int], n_new: int) -> list[int]:
    out = [int(r.prefill(ids).argmax(-1))]
    for pos in range(len(ids), len(ids) + n_new - 1):
        out.append(int(r.decode_one(out[-1], pos).argmax(-1)))
    return out


def plain_and_graph(make, fn):
    """fn(runner) with plain PyTorch ops eagerly, then with the kernels and CUDA graphs (fresh runners)."""
    ops.KERNELS = False
    with torch.inference_mode():
        plain = fn(make())
    ops.KERNELS = True
    r = make()
    with torch.inference_mode():
        graph = fn(r)
    return plain, graph, r


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.15)])
def test_tiny_llama_on_cuda(tmp_path, dtype, tol):
    """Logits of prefill and cached decode (graph replays) against transformers."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    ref.save_pretrained(tmp_path)
    ids = torch.randint(0, 320, (20,)).tolist()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    r = cuda_runner(tmp_path, dtype)
    with torch.inference_mode():
        got = [r.prefill(ids[:12])[0].float().cpu()]
        got += [r.decode_one(ids[i], i)[0].float().cpu() for i in range(12, 20)]
    assert r._graphs, "decode did not use a CUDA graph"
    diff = max((g - want[i]).abs().max().item() for g, i in zip(got, range(11, 20)))
    assert diff < tol, diff


@pytest.mark.parametrize("int4", [True, False], ids=["int4", "dense"])
def test_graph_greedy_equals_plain_eager_minicpm(tmp_path, int4, monkeypatch):
    """fp32, so the two paths differ only by summation order: greedy tokens must be identical. The single-pass
    attention bound is lowered so that decoding crosses from the short graph into the split + merge one."""
    from engine.kernels import rope_decode_attention

    monkeypatch.setattr(rope_decode_attention, "SINGLE_MAX", 32)
    path = write_minicpm(tmp_path / "m")
    ids = prompt(21)

    def make():
        r = cuda_runner(path, torch.float32, int4, max_seq_len=128)
        r.short_len = 32
        return r

    plain, graph, r = plain_and_graph(make, lambda r: greedy(r, ids, 40))
    assert sorted(r._graphs) == [(1, 32), (1, 128)]
    assert graph == plain


def test_graph_bf16_minicpm_close_to_plain(tmp_path):
    """bf16: the fused kernels round differently from the op-by-op path (fp32 inside each kernel), so
    teacher-forced logits are compared (close), and greedy tokens where the plain path's top two are apart."""
    path = write_minicpm(tmp_path / "m", seed=1)
    ids = prompt(60, seed=1)

    def logits(r):
        rows = [r.prefill(ids[:20])[0].float()]
        rows += [r.decode_one(ids[i], i)[0].float() for i in range(20, 60)]
        return torch.stack(rows).cpu()

    plain, graph, _ = plain_and_graph(lambda: cuda_runner(path, torch.bfloat16, True, max_seq_len=128), logits)
    assert (plain - graph).abs().max().item() < 0.25
    top2 = plain.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.25
    assert clear.sum() > 10 and torch.equal(plain.argmax(-1)[clear], graph.argmax(-1)[clear])


def test_batch_buckets_equal_single_sequences(tmp_path):
    """decode_batch over batch buckets (3 rows -> the 4 bucket, 2 -> 2, 1 -> 1) with rows at different
    positions: each row's greedy tokens equal its own single-sequence plain eager run."""
    path = write_minicpm(tmp_path / "m", seed=2)
    prompts = [prompt(n, seed=n) for n in (9, 17, 5)]

    def batch(r, ps):
        logits = torch.cat([r.prefill(p, row=b) for b, p in enumerate(ps)])
        last = logits.argmax(-1)
        out = [[int(t)] for t in last]
        pos = torch.tensor([len(p) for p in ps], device="cuda")
        for _ in range(24):
            last = r.decode_batch(last, pos).argmax(-1)
            pos += 1
            for b, t in enumerate(last.tolist()):
                out[b].append(t)
        return out

    make = lambda: cuda_runner(path, torch.float32, True, max_batch=4, max_seq_len=128)  # noqa: E731
    ops.KERNELS = False
    with torch.inference_mode():
        want = [greedy(make(), p, 25) for p in prompts]
    ops.KERNELS = True
    for n in (3, 2, 1):
        r = make()
        with torch.inference_mode():
            assert batch(r, prompts[:n]) == want[:n], n
        assert list(r._graphs) == [({3: 4, 2: 2, 1: 1}[n], 128)]


def test_cache_written_between_replays(tmp_path):
    """Another path (as speculative verification does) writes K/V at later slots with its own forward pass
    between replays; the next replay reads its position from the static input and sees those entries."""
    path = write_minicpm(tmp_path / "m", seed=3)
    ids = prompt(30, seed=3)

    def run(r):
        out = [int(r.prefill(ids[:10]).argmax(-1))]
        for pos in range(10, 15):
            out.append(int(r.decode_one(ids[pos], pos).argmax(-1)))
        T = 4  # tokens 15..18 in one eager forward, as a verification pass would
        ctx = StepContext(start=15, kv_len=19, causal=True, cos=r.cos[None, 15:19], sin=r.sin[None, 15:19], attn=r.attn)
        toks = torch.tensor([ids[15:15 + T]], device="cuda")
        out.append(int(r.model.logits(r.model.hidden(toks, ctx, r.cache))[0, -1].argmax()))
        for pos in range(19, 30):
            out.append(int(r.decode_one(ids[pos], pos).argmax(-1)))
        return out

    plain, graph, r = plain_and_graph(lambda: cuda_runner(path, torch.float32, True, max_seq_len=64), run)
    assert r._graphs and graph == plain


def _decode_with_dense_backend(tmp_path, graph_safe: bool):
    """Greedy-decode 8 tokens of a tiny MiniCPM4 with runner.attn set to a dense backend that records its calls;
    returns (tokens, calls, runner, the plain path's tokens)."""
    path = write_minicpm(tmp_path / "m", seed=4)
    ids = prompt(12, seed=4)
    calls = []

    def dense(layer, q, k, v, ctx, q_raw, k_raw):
        calls.append(layer)
        return ops.attention(q, k, v, ctx.mask, ctx.causal, q.shape[-1] ** -0.5, ctx.lengths)

    if graph_safe:
        dense.graph_safe = True
    r = cuda_runner(path, torch.float32, True, max_seq_len=64)
    r.attn = dense
    with torch.inference_mode():
        got = greedy(r, ids, 8)
    plain, _, _ = plain_and_graph(lambda: cuda_runner(path, torch.float32, True, max_seq_len=64),
                                  lambda r: greedy(r, ids, 8))
    return got, calls, r, plain


def test_attention_backend_decodes_eagerly(tmp_path):
    """With runner.attn set, decode runs eagerly (a backend may not be capturable) and still gets called."""
    got, calls, r, plain = _decode_with_dense_backend(tmp_path, graph_safe=False)
    assert not r._graphs and len(calls) == 3 * 8
    assert got == plain


def test_graph_safe_attention_backend_is_captured(tmp_path):
    """A backend that declares graph_safe runs inside the decode graph: Python calls it while warming up and
    capturing only, and the tokens equal the plain path's."""
    got, calls, r, plain = _decode_with_dense_backend(tmp_path, graph_safe=True)
    assert len(r._graphs) == 1 and len(calls) == 3 * (1 + 3)  # prefill, 2 warm-up steps, capture; 7 replays
    assert got == plain


def test_decode_greedy_fast_path(tmp_path):
    path = write_minicpm(tmp_path / "m", seed=5)
    ids = prompt(15, seed=5)
    r = cuda_runner(path, torch.float32, True, max_seq_len=64)
    with torch.inference_mode():
        want = greedy(r, ids, 20)
        got = [int(r.prefill(ids).argmax(-1))]
        for pos in range(15, 34):
            got.append(r.decode_greedy(got[-1], pos))
        # the graph advanced its own inputs; a call that does not continue the loop must still be honoured
        again = [int(r.prefill(ids).argmax(-1))]
        for pos in range(15, 25):
            again.append(r.decode_greedy(again[-1], pos))
        forced = r.decode_greedy(want[3], 18)  # teacher-forced at an earlier position
    assert got == want and again == want[:11] and forced == want[4]


def test_greedy_chunks_equal_plain_greedy_and_leave_no_trace(tmp_path, monkeypatch):
    """Runner.greedy_chunks (graph replays back to back, picks read a chunk at a time, crossing from the short
    graph into the split + merge one with nothing uploaded) gives the plain path's greedy tokens. A run stopped
    after its first chunk (steps left in flight past the stop) changes nothing for the next request, nor for a
    decode_greedy that follows it."""
    from engine.kernels import rope_decode_attention

    monkeypatch.setattr(rope_decode_attention, "SINGLE_MAX", 32)
    path = write_minicpm(tmp_path / "m", seed=6)
    ids = prompt(21, seed=6)

    def make():
        r = cuda_runner(path, torch.float32, True, max_seq_len=128)
        r.short_len = 32
        return r

    def chunked(r, chunk):
        first = int(r.prefill(ids).argmax(-1))
        return [first] + [t for c in r.greedy_chunks(first, len(ids), 39, chunk) for t in c]

    ops.KERNELS = False
    with torch.inference_mode():
        want = greedy(make(), ids, 40)
    ops.KERNELS = True
    r = make()
    with torch.inference_mode():
        first = int(r.prefill(ids).argmax(-1))
        run = r.greedy_chunks(first, len(ids), 39, 5)
        head = next(run)
        run.close()  # stopped early: up to two chunks computed past here
        got = chunked(r, 5)
        odd = chunked(r, 3)
        first = int(r.prefill(ids).argmax(-1))
        loop = [first] + [r.decode_greedy(first, len(ids))]
        for pos in range(len(ids) + 1, len(ids) + 10):
            loop.append(r.decode_greedy(loop[-1], pos))
    assert sorted(r._graphs) == [(1, 32), (1, 128)]
    assert head == want[1:6] and got == want and odd == want and loop == want[:11]


def test_pdl_off_gives_the_same_tokens(tmp_path, monkeypatch):
    """CPM_PDL=0 (the off switch) and the default give the same fp32 greedy tokens through the decode graph."""
    path = write_minicpm(tmp_path / "m", seed=7)
    ids = prompt(17, seed=7)
    runs = []
    for off in (False, True):
        if off:
            monkeypatch.setenv("CPM_PDL", "0")
        with torch.inference_mode():
            runs.append(greedy(cuda_runner(path, torch.float32, True, max_seq_len=64), ids, 24))
    assert runs[0] == runs[1]


def smollm2_path() -> Path:
    env = os.environ.get("CPM_SMOLLM2_GGUF")
    if env:
        return Path(env)
    from engine.assets import resolve
    from engine.errors import AssetMissing

    try:
        return resolve("smollm2-135m")
    except AssetMissing:
        pytest.skip("smollm2-135m not installed (set CPM_SMOLLM2_GGUF to its .gguf)")


def test_smollm2_graph_greedy_equals_cpu_engine():
    """The real checkpoint: the fp32 CUDA-graph engine vs the fp32 CPU engine, 64 greedy tokens on each prompt.
    (bf16 is not compared token for token: its rounding, the Q8_0 tied head's above all, moves near-ties.)"""
    from engine import Engine, SamplingParams

    path = smollm2_path()
    gpu = Engine.load(str(path), device="cuda", dtype=torch.float32)
    cpu = Engine.load(str(path), device="cpu", dtype=torch.float32)
    for q in ("What is the capital of France?", "Write a haiku about the sea."):
        text = gpu.apply_chat_template([{"role": "user", "content": q}])
        a = gpu.generate(text, SamplingParams(max_tokens=64))
        b = cpu.generate(text, SamplingParams(max_tokens=64))
        assert a.token_ids == b.token_ids, (a.text, b.text)
        # a stop token mid-run: the same truncation, and the run's steps past the stop leave no trace
        mid = b.token_ids[len(b.token_ids) // 2]  # the capital answer is 8 tokens, the haiku 30-40
        stop = SamplingParams(max_tokens=64, stop_token_ids=[mid])
        c, d = gpu.generate(text, stop), cpu.generate(text, stop)
        assert c.token_ids == d.token_ids == b.token_ids[:b.token_ids.index(mid) + 1]
        assert c.finish_reason == "stop"
        assert gpu.generate(text, SamplingParams(max_tokens=64)).token_ids == b.token_ids
    assert gpu.runner.paged_graphs  # plain requests go through the scheduler: its bucket graphs served them


QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three prime numbers.",
             "Explain photosynthesis in one sentence.", "What is 12 times 12?", "Say hello in Spanish."]


def test_smollm2_scheduler_concurrent_equals_alone_and_prefix_hit_equals_miss():
    """fp32 on the GPU through the scheduler: six requests at once (batched decode graphs over buckets 1..8,
    chunked prefill between them) give each request's tokens alone, up to rounding: the int4 kernels tile a
    one-row GEMV and a many-row GEMM differently (and a Triton fp32 dot may run in TF32), so a near-tie late in an
    answer may part; every answer's first 8 tokens and most answers whole must agree. A repeated long prompt is
    served from the prefix cache (cached_tokens > 0) with the same tokens (same batch shape both times)."""
    from engine import Engine, SamplingParams

    eng = Engine.load(str(smollm2_path()), device="cuda", dtype=torch.float32, max_seq_len=2048)
    texts = [eng.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    params = SamplingParams(max_tokens=48)
    alone = [eng.generate(t, params).token_ids for t in texts]
    together = [r.token_ids for r in eng.generate_batch(texts, params)]
    assert all(a[:8] == b[:8] for a, b in zip(together, alone)), (together, alone)
    assert sum(a == b for a, b in zip(together, alone)) >= 4, (together, alone)
    assert max(eng.runner.paged_graphs) >= 4  # six rows at once went through a bucket of 8 (or 4 as they ended)
    long = eng.apply_chat_template([{"role": "system", "content": " ".join(QUESTIONS * 12)},
                                    {"role": "user", "content": QUESTIONS[0]}])
    miss, hit = eng.generate(long, params), eng.generate(long, params)
    assert miss.cached_tokens == 0 and hit.cached_tokens >= 64 and hit.token_ids == miss.token_ids


def test_smollm2_scheduler_bf16_agrees_with_row_path():
    """bf16 (the default): the scheduler's paged path (Engine.generate) and the row path (Runner.prefill +
    greedy_chunks on the contiguous rows, as speculative and InfLLM v2 engines decode) agree on a clear greedy
    answer; they round differently (paged SDPA / flash-decoding vs the fused row kernels), so only its first 8
    tokens are compared."""
    from engine import Engine, SamplingParams

    eng = Engine.load(str(smollm2_path()), device="cuda", max_seq_len=1024)
    text = eng.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}])
    paged = eng.generate(text, SamplingParams(max_tokens=8)).token_ids
    with torch.inference_mode():
        first = int(eng.runner.prefill(eng._ids(text)).argmax(-1))
        row = [first] + [t for c in eng.runner.greedy_chunks(first, len(eng._ids(text)), 7) for t in c]
    assert paged == row


def test_int4_linear_on_cuda_matches_cpu(monkeypatch):
    """The plain PyTorch path on the GPU (the Triton kernels have their own tests in tests/kernels/)."""
    monkeypatch.setattr(ops, "KERNELS", False)
    g = torch.Generator().manual_seed(0)
    w = Int4Weight(pack_int4(torch.randint(0, 16, (96, 128), generator=g)), torch.rand(96, 4, generator=g) * 0.1,
                   -torch.rand(96, 4, generator=g), 32, torch.randperm(128, generator=g))
    x = torch.randn(3, 128, generator=g)
    want = ops.linear(x, w)
    got = ops.linear(x.cuda(), w.to("cuda")).cpu()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
