"""`Engine`: load a checkpoint, then generate / stream / chat (contract: docs/interfaces.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from engine.cache import KVCache
from engine.config import ModelConfig
from engine.detok import TextTracker
from engine.errors import EngineError
from engine.model import Transformer
from engine.rope import rope_table
from engine.runner import Runner
from engine.sampling import Sampler, SamplingParams


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, prompt excluded (a final EOS/stop id included, as HF does)
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    decode_tokens: int
    prefill_s: float  # prompt forward pass, up to the first token's logits
    decode_s: float  # everything after: the remaining decode_tokens - 1 forward passes and sampling
    spec: object | None = None  # engine.speculative.decode.SpecStats when a drafter was used

    @property
    def decode_tok_s(self) -> float:
        """Decode throughput: tokens produced by decode steps (the first comes from prefill) per second."""
        return (self.decode_tokens - 1) / self.decode_s if self.decode_tokens > 1 and self.decode_s > 0 else 0.0


@dataclass
class StreamChunk:
    text: str  # new text (may be "" while a multi-byte char or a possible stop string is incomplete)
    token_id: int | None
    result: GenerationResult | None  # set on the last chunk only


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but no CUDA GPU is visible (use --device cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise EngineError(f"unknown device {device!r} (use auto, cpu or cuda)") from None


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
    """An in-process model. Not thread-safe: callers sharing one serialise access with a lock."""

    def __init__(self, model: Transformer, tokenizer, config: ModelConfig, device: torch.device,
                 dtype: torch.dtype, max_seq_len: int, max_batch: int, path: Path):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device, self.dtype, self.max_seq_len, self.max_batch, self.path = device, dtype, max_seq_len, max_batch, path
        self.cache = KVCache(config, max_batch, max_seq_len, device, dtype)
        cos, sin = rope_table(config, max_seq_len)
        self.runner = Runner(model, self.cache, cos.to(device, dtype), sin.to(device, dtype))
        self.drafters: dict[str, object] = {}  # loaded Eagle heads by spec string (engine.speculative)
        self.spec_graphs: dict[int, object] = {}  # captured tree-verification passes by size (CUDA)
        self.eos_ids = set(config.eos_token_ids)
        if getattr(tokenizer, "eos_token_id", None) is not None:
            self.eos_ids.add(int(tokenizer.eos_token_id))

    @classmethod
    def load(cls, model: str = "smollm2-135m", device: str = "auto", dtype=None,
             max_seq_len: int | None = None, max_batch: int = 1) -> "Engine":
        """Load an alias (engine.assets), a .gguf file or an HF folder. dtype defaults to float32 on CPU (int4
        layers on torch's int4 kernel; pass dtype=torch.float32 for exact fp32 math) and bfloat16 on CUDA;
        max_seq_len to min(the model's context, 8192)."""
        from engine.assets import resolve
        from engine.tokenizer import load_tokenizer

        path = resolve(model)
        dev = _pick_device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise EngineError("dtype must be one of float32, float16, bfloat16")
        # CPU, dtype not given: int4 layers run torch's CPU int4 kernel (weights stay 4-bit; bf16 activations
        # inside those matmuls, as llama.cpp also rounds activations for its q4 dot products).
        # CPU, dtype=float32: exact mode, each int4 layer also kept dequantized in fp32 beside its int4 form.
        cpu_int4 = dev.type == "cpu" and dtype is None
        dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        if max_batch < 1:
            raise EngineError(f"max_batch must be >= 1, got {max_batch}")
        cfg, tensors = load_checkpoint(path)
        m = Transformer(cfg, tensors, str(path))
        # GPU never dequantizes the model: int4 layers are dequantized one at a time (until kernels take over)
        m.to(dev, dtype, cache_dense=dev.type == "cpu", cpu_int4=cpu_int4)
        seq = max_seq_len or min(cfg.max_position_embeddings, 8192)
        engine = cls(m, load_tokenizer(path), cfg, dev, dtype, seq, max_batch, path)
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
    @torch.inference_mode()
    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[StreamChunk]:
        """Yield text pieces as tokens arrive; the last chunk carries the GenerationResult."""
        params = params or SamplingParams()
        params.validate()
        ids = self._ids(prompt)
        if params.spec != "none":
            from engine.speculative import make_drafter, speculative_stream

            yield from speculative_stream(self, ids, params, make_drafter(self, params.spec), params.spec)
            return
        stops = self.eos_ids | set(params.stop_token_ids)
        budget = min(params.max_tokens, self.max_seq_len - len(ids))
        sampler, text = Sampler(params, ids, self.device), TextTracker(self.tokenizer, params.stop)
        t0 = time.perf_counter()
        logits = self.runner.prefill(ids, row=0)
        t1 = time.perf_counter()
        reason, last = "length", None
        # plain greedy takes the argmax computed inside the decode graph, several steps to a host sync
        fast = params.temperature == 0 and params.repetition_penalty == 1.0 and not params.logits_processors
        tokens = self._greedy_tokens(sampler, logits, len(ids), budget) if fast else \
            self._sampled_tokens(sampler, logits, len(ids))
        for tok in tokens:
            if tok in stops:  # EOS / stop token: recorded in token_ids, never in the text
                reason, last = "stop", tok
                break
            piece = text.push(tok)
            if piece or not text.stopped:
                yield StreamChunk(piece, tok, None)
            if text.stopped:
                reason = "stop"
                break
            if len(sampler.generated) >= budget:
                break
        tokens.close()  # a greedy run may have steps in flight past the stop: dropped
        t2 = time.perf_counter()
        tail = text.finish()  # text held back as a possible stop-string start, now final
        gen = sampler.generated
        result = GenerationResult(text.text, gen, reason, len(ids), len(gen), t1 - t0, t2 - t1)
        yield StreamChunk(tail, last, result)

    def _sampled_tokens(self, sampler: Sampler, logits: torch.Tensor, pos: int) -> Iterator[int]:
        """Generated ids (recorded in the sampler), one decode step and one sample each; logits: the prompt's."""
        while True:
            tok = sampler(logits[0])
            yield tok
            logits = self.runner.decode_one(tok, pos)
            pos += 1

    def _greedy_tokens(self, sampler: Sampler, logits: torch.Tensor, pos: int, budget: int) -> Iterator[int]:
        """As _sampled_tokens for plain greedy decoding: the picks after the first come from the device
        (Runner.greedy_chunks: graph replays back to back, read a few at a time), at most `budget` in all."""
        tok = sampler(logits[0])
        yield tok
        for chunk in self.runner.greedy_chunks(tok, pos, budget - 1):
            for tok in chunk:
                sampler.record(tok)
                yield tok

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> GenerationResult:
        """Generate to completion; see `stream` for the pieces."""
        for chunk in self.stream(prompt, params):
            if chunk.result is not None:
                return chunk.result
        raise AssertionError("stream ended without a result")

    def chat(self, messages: list[dict], params: SamplingParams | None = None, tools=None) -> GenerationResult:
        """Apply the chat template (generation prompt added) and generate."""
        return self.generate(self.apply_chat_template(messages, tools=tools), params)

    @torch.inference_mode()
    def generate_batch(self, prompts: list[str | list[int]], params: SamplingParams | None = None
                       ) -> list[GenerationResult]:
        """Generate for several prompts, max_batch at a time, decoding each group in one batched pass."""
        from engine.batch import run_batch

        params = params or SamplingParams()
        params.validate()
        if params.spec != "none":  # speculation verifies one sequence's tree at a time
            return [self.generate(p, params) for p in prompts]
        out: list[GenerationResult] = []
        for g in range(0, len(prompts), self.max_batch):
            out += run_batch(self, [self._ids(p) for p in prompts[g:g + self.max_batch]], params)
        return out
