"""`Engine`: load a checkpoint, then generate / stream / chat (contract: docs/interfaces.md).

Thread-safe: every request becomes a Sequence submitted to one engine loop (engine/loop.py) that owns the
device and batches the running sequences over a paged KV pool (engine/scheduler.py); callers on any thread read
their own stream.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import torch

from engine.block_manager import BlockManager
from engine.cache import KVCache, PagedKVCache
from engine.config import ModelConfig
from engine.errors import EngineError
from engine.loop import EngineLoop
from engine.model import Transformer
from engine.results import EngineStats, GenerationResult, StreamChunk
from engine.rope import rope_table
from engine.runner import Runner
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Request, Sequence

__all__ = ["Engine", "GenerationResult", "StreamChunk", "EngineStats", "load_checkpoint"]

BLOCK_SIZE = 64  # tokens a KV block holds: InfLLM v2's block, and few enough that a sequence wastes < 64 slots
MAX_RUNNING = 16  # sequences decoding at once (the C layer takes up to 64 tokens a call)
PREFILL_CHUNK_CPU = 256  # prompt tokens a scheduled step feeds per sequence (docs/decisions.md: engine core)
PREFILL_CHUNK_CUDA = 512  # on a GPU a chunk of 512 still costs about one decode step of a small model
CUDA_KV_TOKENS = 2048  # per running sequence, the CUDA pool's default share (at least 2 x max_seq_len in all)


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but no CUDA GPU is visible (use --device cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise EngineError(f"unknown device {device!r} (use auto, cpu or cuda)") from None


def default_kv_blocks(device: torch.device, max_seq_len: int, max_running: int, block_size: int) -> int:
    """The pool's default size in blocks: room for two max_seq_len sequences (CPU: pages never touched cost no
    memory); on CUDA, where the pool is resident, also max_running sequences of CUDA_KV_TOKENS each, so 16
    clients with short prompts never preempt one another."""
    tokens = 2 * max_seq_len
    if device.type == "cuda":
        tokens = max(tokens, max_running * min(max_seq_len, CUDA_KV_TOKENS))
    return -(-tokens // block_size)


def load_checkpoint(path: Path) -> tuple[ModelConfig, dict]:
    """(config, canonical tensors) from a .gguf file or an HF safetensors folder."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise EngineError(f"{path}: expected a .gguf file or an HF checkpoint folder")
        from engine.gguf_weights import load_gguf

        cfg, tensors, _ = load_gguf(path)
        return cfg, tensors
    from engine.hf_weights import load_hf

    return load_hf(path)


class Engine:
    """An in-process model. Thread-safe: requests from any thread share one loop and one KV pool."""

    def __init__(self, model: Transformer, tokenizer, config: ModelConfig, device: torch.device,
                 dtype: torch.dtype, max_seq_len: int, max_batch: int, path: Path, kv_blocks: int | None = None,
                 block_size: int = BLOCK_SIZE, max_running: int = MAX_RUNNING, prefix_cache: bool = True,
                 prefill_chunk: int | None = None):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device, self.dtype, self.max_seq_len, self.max_batch, self.path = device, dtype, max_seq_len, max_batch, path
        cos, sin = rope_table(config, max_seq_len)
        # the contiguous rows (speculative requests, InfLLM v2's backend: docs/decisions.md), made on first use
        rows = lambda: KVCache(config, max_batch, max_seq_len, device, dtype)  # noqa: E731
        self.runner = Runner(model, rows, cos.to(device, dtype), sin.to(device, dtype), max_running,
                             block_size)
        # the paged pool serves every plain request, on CPU and CUDA alike
        if kv_blocks is None:
            kv_blocks = default_kv_blocks(device, max_seq_len, max_running, block_size)
        self._pool_args = (config, kv_blocks, block_size, device, dtype)
        self._pool: PagedKVCache | None = None
        blocks = BlockManager(kv_blocks, block_size, prefix_cache)
        if prefill_chunk is None:
            prefill_chunk = PREFILL_CHUNK_CUDA if device.type == "cuda" else PREFILL_CHUNK_CPU
        scheduler = Scheduler(blocks, max_running, max(prefill_chunk, max_running) + max_running, prefill_chunk)
        self.loop = EngineLoop(self, scheduler)
        self.drafters: dict[str, object] = {}  # loaded Eagle heads by spec string (engine.speculative)
        self.spec_graphs: dict[int, object] = {}  # captured tree-verification passes by size (CUDA)
        self.eos_ids = set(config.eos_token_ids)
        if getattr(tokenizer, "eos_token_id", None) is not None:
            self.eos_ids.add(int(tokenizer.eos_token_id))

    @property
    def pool(self) -> PagedKVCache:
        """The paged KV pool, allocated by the first scheduled step: an engine whose requests all take the row
        path (an InfLLM v2 attention backend on CUDA) never holds it."""
        if self._pool is None:
            self._pool = PagedKVCache(*self._pool_args)
        return self._pool

    @property
    def cache(self) -> KVCache:
        """The contiguous cache rows (speculative verification, CUDA graphs, attention backends)."""
        return self.runner.cache

    @classmethod
    def load(cls, model: str = "smollm2-135m", device: str = "auto", dtype=None,
             max_seq_len: int | None = None, max_batch: int = 1, kv_blocks: int | None = None,
             block_size: int = BLOCK_SIZE, max_running: int = MAX_RUNNING, prefix_cache: bool | None = None
             ) -> "Engine":
        """Load an alias (engine.assets), a .gguf file or an HF folder. dtype defaults to float32 on CPU (int4
        layers on the engine's C kernel; pass dtype=torch.float32 for exact fp32 math) and bfloat16 on CUDA;
        max_seq_len to min(the model's context, 8192). kv_blocks x block_size tokens of paged KV (default: room
        for two max_seq_len sequences); max_running sequences decode together; max_batch is the number of
        contiguous cache rows (speculation, InfLLM v2 batches). prefix_cache defaults to on (CPM_PREFIX_CACHE=0: off)."""
        from engine.assets import resolve
        from engine.tokenizer import load_tokenizer

        path = resolve(model)
        dev = _pick_device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise EngineError("dtype must be one of float32, float16, bfloat16")
        # CPU, dtype not given: int4 layers run the engine's C kernel (engine/cpu_q4.c; weights stay 4-bit).
        # CPU, dtype=float32: exact mode, each int4 layer also kept dequantized in fp32 beside its int4 form.
        cpu_int4 = dev.type == "cpu" and dtype is None
        dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        for name, value in (("max_batch", max_batch), ("block_size", block_size), ("max_running", max_running)):
            if value < 1:
                raise EngineError(f"{name} must be >= 1, got {value}")
        if kv_blocks is not None and kv_blocks < 1:
            raise EngineError(f"kv_blocks must be >= 1, got {kv_blocks}")
        if prefix_cache is None:
            prefix_cache = os.environ.get("CPM_PREFIX_CACHE", "1") != "0"
        cfg, tensors = load_checkpoint(path)
        m = Transformer(cfg, tensors, str(path))
        # GPU never dequantizes the model: int4 layers are dequantized one at a time (until kernels take over)
        m.to(dev, dtype, cache_dense=dev.type == "cpu", cpu_int4=cpu_int4)
        seq = max_seq_len or min(cfg.max_position_embeddings, 8192)
        engine = cls(m, load_tokenizer(path), cfg, dev, dtype, seq, max_batch, path, kv_blocks, block_size,
                     max_running, prefix_cache)
        # MiniCPM4 InfLLM v2 (docs/infllm_v2.md): sparse past dense_len on CUDA; dense on CPU, as the model's
        # own HF code does when no GPU is present
        if cfg.sparse_config is not None and dev.type == "cuda":
            from engine.attention import enable_sparse

            enable_sparse(engine)
        return engine

    # ---- text in, ids out -------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None,
                            add_generation_prompt: bool = True) -> str:
        """The prompt text, exactly as transformers' `tokenizer.apply_chat_template(..., tokenize=False)`."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineError(f"{self.path}: the tokenizer has no chat template; use generate() with plain text")
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            ids = list(prompt)
        else:
            # text that already starts with BOS (a rendered chat template) gets no second one, matching
            # transformers' apply_chat_template(tokenize=True), which encodes with add_special_tokens=False
            bos = getattr(self.tokenizer, "bos_token", None)
            special = not (bos and prompt.startswith(bos))
            ids = self.tokenizer.encode(prompt, add_special_tokens=special)
        if not ids:
            raise EngineError("empty prompt")
        if len(ids) >= self.max_seq_len:
            raise EngineError(f"prompt has {len(ids)} tokens, the context limit is {self.max_seq_len} "
                              "(shorten it or load with a larger max_seq_len)")
        if any(i < 0 or i >= self.config.vocab_size for i in ids):
            raise EngineError(f"prompt has token ids outside the vocabulary (0..{self.config.vocab_size - 1})")
        return ids

    # ---- generation -------------------------------------------------------------------------------------
    def submit(self, prompt: str | list[int], params: SamplingParams | None = None, **overrides) -> Request:
        """Queue a request; returns its handle at once (iterate it for StreamChunks, .result(), .cancel()).
        `overrides` are SamplingParams fields (max_tokens=..., repetition_penalty=..., no_repeat_ngram_size=...)
        applied over `params`. Bad input raises EngineError here, in the caller's thread."""
        params = _with_overrides(params, overrides)
        params.validate()
        ids = self._ids(prompt)
        seq = Sequence(ids, params, self.tokenizer, self.eos_ids, self.max_seq_len, self.device)
        row_path = params.spec != "none" or self.runner.attn is not None
        if not row_path:
            blocks = self.loop.scheduler.blocks
            need = len(ids) + seq.budget - 1  # the last generated token is never fed back
            if blocks.blocks_for(need) > blocks.num_blocks:
                raise EngineError(f"the request needs up to {need} tokens of KV (prompt {len(ids)} + max_tokens "
                                  f"{seq.budget}), the KV pool holds {blocks.num_blocks * blocks.block_size}; "
                                  "lower max_tokens or load with more kv_blocks")
        self.loop.submit(seq, row_path)
        return Request(seq, self.loop.wake)

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None, **overrides
               ) -> Iterator[StreamChunk]:
        """Yield text pieces as tokens arrive; the last chunk carries the GenerationResult. Closing the
        generator early (break, an exception in the consumer) cancels the request and frees its blocks."""
        req = self.submit(prompt, params, **overrides)
        try:
            yield from req
        finally:
            if not req.done:
                req.cancel()

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None, **overrides
                 ) -> GenerationResult:
        """Generate to completion; see `stream` for the pieces."""
        req = self.submit(prompt, params, **overrides)
        try:
            return req.result()
        finally:
            if not req.done:  # interrupted (KeyboardInterrupt): free the blocks
                req.cancel()

    def chat(self, messages: list[dict], params: SamplingParams | None = None, tools=None, **overrides
             ) -> GenerationResult:
        """Apply the chat template (generation prompt added) and generate."""
        return self.generate(self.apply_chat_template(messages, tools=tools), params, **overrides)

    def generate_batch(self, prompts: list[str | list[int]], params: SamplingParams | None = None, **overrides
                       ) -> list[GenerationResult]:
        """Generate for several prompts at once (they run concurrently through the scheduler); results in order."""
        reqs: list[Request] = []
        try:
            for p in prompts:
                reqs.append(self.submit(p, params, **overrides))
            return [r.result() for r in reqs]
        finally:
            for r in reqs:
                if not r.done:
                    r.cancel()

    def stats(self) -> EngineStats:
        """Running / waiting sequences, KV blocks used / total, token counters (for /metrics)."""
        return self.loop.stats()

    def close(self) -> None:
        """Stop the loop thread (requests still queued end with an error)."""
        self.loop.close()


def _with_overrides(params: SamplingParams | None, overrides: dict) -> SamplingParams:
    params = params or SamplingParams()
    if not overrides:
        return params
    names = {f.name for f in dataclasses.fields(SamplingParams)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise EngineError(f"unknown sampling parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return dataclasses.replace(params, **overrides)
