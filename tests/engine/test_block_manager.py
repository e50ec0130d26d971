"""Property test of the KV block manager and scheduler bookkeeping (hypothesis): under random admissions,
growth, commits, preemptions and frees, reference counts never go negative, every block is either free or held
(the pool is conserved), and no block is writable by two live sequences; prefix hits only ever share blocks
whose whole prefix matches."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.block_manager import BlockManager


class Seq:  # the fields the block manager reads and writes (engine.sequence.Sequence has the same names)
    def __init__(self, token_ids):
        self.token_ids = list(token_ids)
        self.block_table, self.block_keys = [], []
        self.num_computed = self.num_cached_tokens = 0


def _check(bm: BlockManager, live: list[Seq]) -> None:
    held: dict[int, int] = {}
    for s in live:
        for b in s.block_table:
            held[b] = held.get(b, 0) + 1
    for b in bm.blocks:
        assert b.ref_count >= 0
        assert b.ref_count == held.get(b.id, 0)
        assert (b.ref_count == 0) == (b.id in bm.free)
    assert len(bm.free) + len(held) == bm.num_blocks  # conserved: free or held, never both, never lost
    # a sequence writes slots >= num_computed: the blocks holding them must be its alone
    writers: dict[int, Seq] = {}
    for s in live:
        for b in s.block_table[s.num_computed // bm.block_size:]:
            assert b not in writers, "block writable by two live sequences"
            assert held[b] == 1, "a block still to be written is shared"
            writers[b] = s


ops = st.lists(st.tuples(st.sampled_from(["add", "step", "free", "grow"]), st.integers(0, 7),
                         st.lists(st.integers(0, 3), min_size=1, max_size=40)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, 24), st.sampled_from([1, 2, 4]), st.booleans())
def test_block_manager_invariants(actions, num_blocks, block_size, prefix_cache):
    bm = BlockManager(num_blocks, block_size, prefix_cache)
    live: list[Seq] = []
    for op, k, tokens in actions:
        if op == "add":
            s = Seq(tokens)
            if bm.can_allocate(s.token_ids):
                bm.allocate(s)
                assert s.num_computed % block_size == 0 and s.num_computed < len(s.token_ids)
                live.append(s)
        elif live:
            s = live[k % len(live)]
            if op == "step":  # compute some of its tokens, then make full blocks shareable
                s.num_computed = min(len(s.token_ids), s.num_computed + 1 + k)
                bm.commit(s)
            elif op == "grow":  # decode: one more token, a new block when it crosses a boundary
                if s.num_computed == len(s.token_ids) and bm.can_grow(s, len(s.token_ids) + 1):
                    s.token_ids.append(k % 4)
                    bm.grow(s, len(s.token_ids))
            else:  # finish, cancel or preempt
                bm.free_seq(s)
                live.remove(s)
        _check(bm, live)
    for s in live:
        bm.free_seq(s)
    _check(bm, [])
    assert bm.num_free == num_blocks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=2, max_size=30), st.lists(st.integers(0, 2), max_size=30))
def test_prefix_hits_share_only_equal_prefixes(a, b):
    bm = BlockManager(64, 2, True)
    first = Seq(a)
    bm.allocate(first)
    first.num_computed = len(a)
    bm.commit(first)
    second = Seq(a[:len(a) // 2] + b if b else a)
    bm.allocate(second)
    shared = second.num_cached_tokens
    assert second.token_ids[:shared] == first.token_ids[:shared]
    assert second.block_table[:shared // 2] == first.block_table[:shared // 2]
    assert shared < len(second.token_ids)
