"""What a generation hands back: the final GenerationResult, the StreamChunks before it, and the engine's counters.

A module of its own so that everything below the Engine (the sequence, the loop, speculative decoding) can
build results without importing engine.engine.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, prompt excluded (a final EOS/stop id included, as HF does)
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    decode_tokens: int
    prefill_s: float  # from the request's first scheduled step to its first token's logits
    decode_s: float  # everything after: the remaining decode_tokens - 1 steps and sampling
    spec: object | None = None  # engine.speculative.decode.SpecStats when a drafter was used
    queue_s: float = 0.0  # waiting in the scheduler's queue before the first step (0 when the engine was idle)
    cached_tokens: int = 0  # prompt tokens whose K/V came from the prefix cache instead of a prefill

    @property
    def decode_tok_s(self) -> float:
        """Decode throughput: tokens produced by decode steps (the first comes from prefill) per second."""
        return (self.decode_tokens - 1) / self.decode_s if self.decode_tokens > 1 and self.decode_s > 0 else 0.0


@dataclass
class StreamChunk:
    text: str  # new text (may be "" while a multi-byte char or a possible stop string is incomplete)
    token_id: int | None
    result: GenerationResult | None  # set on the last chunk only


@dataclass
class EngineStats:
    """A snapshot of the serving loop, for /metrics and progress displays."""
    running: int  # sequences holding KV blocks (prefilling or decoding)
    waiting: int  # sequences queued (new or preempted)
    kv_blocks_used: int  # blocks referenced by a live sequence
    kv_blocks_total: int
    kv_block_size: int  # tokens a block holds
    kv_blocks_cached: int  # free blocks still holding a reusable prefix (evicted least recently used first)
    steps: int  # scheduler steps run
    prompt_tokens: int  # prompt tokens of admitted sequences (preemption recompute not counted)
    cached_tokens: int  # of which served from the prefix cache
    generated_tokens: int
    preemptions: int
