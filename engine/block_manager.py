"""KV block bookkeeping: which pool blocks each sequence holds, reference counts, and the prefix cache.

Every block of the pool (engine/cache.PagedKVCache) is either free or held by one or more live sequences
(ref_count > 0). A sequence's block table covers its slots in order; it writes only slots at or past its
cached prefix, and those lie in blocks it holds alone, so no block is ever written by two live sequences.

Prefix caching (vLLM's scheme): a block whose K/V are fully computed gets a key, a hash of its token ids
chained with the key of the block before it, so equal keys mean equal whole prefixes. A new sequence takes the
blocks of its longest cached prefix by reference and prefills only the rest. A block becomes shareable only
once the step that filled it has run (`commit`), never at allocation, because with chunked prefill a
block may be allocated steps before its K/V exist. Freed blocks keep their key and content and go to the back
of the free queue; allocation takes from the front, so the least recently freed cached block is evicted first
(LRU), and a hit on a free block takes it back out of the queue.
"""
from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict

from engine.errors import EngineError


class Block:
    __slots__ = ("id", "ref_count", "key")

    def __init__(self, block_id: int):
        self.id, self.ref_count, self.key = block_id, 0, None


def block_key(prev: bytes | None, token_ids: list[int]) -> bytes:
    """The key of a full block: sha256 of its ids chained with the previous block's key."""
    h = hashlib.sha256(prev or b"")
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return h.digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_cache: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise EngineError(f"the KV pool needs >= 1 block of >= 1 token, got {num_blocks} x {block_size}")
        self.block_size, self.prefix_cache = block_size, prefix_cache
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU order
        self.by_key: dict[bytes, int] = {}

    # ---- counts -----------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_cached_free(self) -> int:
        return sum(1 for i in self.free if self.blocks[i].key is not None)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- allocation -------------------------------------------------------------------------------------
    def _take(self) -> int:
        """A free block for fresh content: the least recently freed one, its old key (if any) dropped."""
        block_id, _ = self.free.popitem(last=False)
        b = self.blocks[block_id]
        if b.key is not None and self.by_key.get(b.key) == block_id:
            del self.by_key[b.key]
        b.key, b.ref_count = None, 1
        return block_id

    def cached_prefix(self, token_ids: list[int]) -> list[int]:
        """Block ids holding the longest cached prefix of `token_ids`, leaving at least one token to compute (the
        last token's logits are what a prefill is for). Nothing is taken."""
        if not self.prefix_cache:
            return []
        out, key, bs = [], None, self.block_size
        for i in range((len(token_ids) - 1) // bs):
            key = block_key(key, token_ids[i * bs:(i + 1) * bs])
            block_id = self.by_key.get(key)
            if block_id is None:
                break
            out.append(block_id)
        return out

    def can_allocate(self, token_ids: list[int]) -> bool:
        hits = self.cached_prefix(token_ids)
        reclaimed = sum(1 for b in hits if self.blocks[b].ref_count == 0)  # hits sitting in the free queue
        return self.blocks_for(len(token_ids)) - len(hits) <= self.num_free - reclaimed

    def allocate(self, seq) -> None:
        """Blocks for all of seq.token_ids: the cached prefix by reference, fresh blocks for the rest. Sets
        seq.block_table, seq.block_keys and seq.num_cached_tokens (= seq.num_computed)."""
        assert not seq.block_table, "sequence already holds blocks"
        hits = self.cached_prefix(seq.token_ids)
        if not self.can_allocate(seq.token_ids):
            raise EngineError("internal: allocate() without room (call can_allocate first)")
        for block_id in hits:
            b = self.blocks[block_id]
            if b.ref_count == 0:
                del self.free[block_id]
            b.ref_count += 1
        seq.block_table = list(hits)
        seq.block_keys = [self.blocks[b].key for b in hits]
        seq.num_cached_tokens = seq.num_computed = len(hits) * self.block_size
        seq.block_table += [self._take() for _ in range(self.blocks_for(len(seq.token_ids)) - len(hits))]

    def can_grow(self, seq, num_tokens: int) -> bool:
        return self.blocks_for(num_tokens) - len(seq.block_table) <= self.num_free

    def grow(self, seq, num_tokens: int) -> None:
        """Enough blocks for the first num_tokens slots (decode: the slot of the token about to be fed)."""
        while len(seq.block_table) < self.blocks_for(num_tokens):
            seq.block_table.append(self._take())

    def commit(self, seq) -> None:
        """Give every block the sequence has now fully computed its key, so later sequences can share it."""
        if not self.prefix_cache:
            return
        bs = self.block_size
        while len(seq.block_keys) < seq.num_computed // bs:
            i = len(seq.block_keys)
            key = block_key(seq.block_keys[-1] if seq.block_keys else None, seq.token_ids[i * bs:(i + 1) * bs])
            seq.block_keys.append(key)
            block_id = seq.block_table[i]
            if key not in self.by_key:  # an equal block computed twice (two sequences at once): the first stays
                self.by_key[key] = block_id
                self.blocks[block_id].key = key

    def free_seq(self, seq) -> None:
        """Drop the sequence's references; blocks nobody holds go to the back of the free queue, its last
        blocks first, so a shared prefix outlives the tail that was only this sequence's."""
        for block_id in reversed(seq.block_table):
            b = self.blocks[block_id]
            b.ref_count -= 1
            if b.ref_count < 0:
                raise EngineError(f"internal: block {block_id} freed more often than taken")
            if b.ref_count == 0:
                self.free[block_id] = None
        seq.block_table, seq.block_keys = [], []
        seq.num_computed = seq.num_cached_tokens = 0
