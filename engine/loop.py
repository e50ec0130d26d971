"""The engine loop: one thread owns the device and runs every request, whoever submitted it.

Callers (Engine.stream / generate / generate_batch, ChatEngine, `cpm serve`, the agents) submit Sequences from
any thread and read their chunks from the sequence's queue. The loop alternates: drop cancelled sequences
(their blocks are freed at once), run a row job if one is queued (speculative / attention-backend requests,
engine/row_path.py: run to the end while the others wait), else one scheduler step over the paged
pool. A step's failure ends the sequences in it with the error; the loop goes on.
"""
from __future__ import annotations

import atexit
import threading
import traceback
import weakref
from collections import deque

import torch

from engine.results import EngineStats
from engine.row_path import row_steps
from engine.scheduler import Scheduler
from engine.sequence import Sequence


_LOOPS: "weakref.WeakSet[EngineLoop]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop the loop threads before the interpreter tears down: a daemon thread left inside torch at exit
    aborts the process ("terminate called without an active exception")."""
    for loop in list(_LOOPS):
        loop.close()


class EngineLoop:
    def __init__(self, engine, scheduler: Scheduler):
        self.engine, self.scheduler = engine, scheduler
        self.rows: deque[Sequence] = deque()  # row-path jobs, first come first served
        self.cv = threading.Condition()
        self.thread: threading.Thread | None = None
        self.steps = self.generated = 0
        self.closed = False

    # ---- called from any thread -------------------------------------------------------------------------
    def submit(self, seq: Sequence, row_path: bool) -> None:
        with self.cv:
            if self.closed:
                raise RuntimeError("the engine loop is closed")
            (self.rows if row_path else self.scheduler.waiting).append(seq)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
                self.thread.start()
                _LOOPS.add(self)
            self.cv.notify()

    def wake(self) -> None:
        with self.cv:
            self.cv.notify()

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=30)

    def stats(self) -> EngineStats:
        s, bm = self.scheduler, self.scheduler.blocks
        with self.cv:
            return EngineStats(running=len(s.running) + (1 if self._row_running else 0),
                               waiting=len(s.waiting) + len(self.rows), kv_blocks_used=bm.num_blocks - bm.num_free,
                               kv_blocks_total=bm.num_blocks, kv_block_size=bm.block_size,
                               kv_blocks_cached=bm.num_cached_free, steps=self.steps, prompt_tokens=s.prompt_tokens,
                               cached_tokens=s.cached_tokens, generated_tokens=self.generated,
                               preemptions=s.preemptions)

    _row_running = False

    # ---- the loop thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._serve()
        except BaseException as exc:  # a bug in the loop itself: no caller may wait forever on a dead thread
            traceback.print_exc()
            with self.cv:
                self.closed = True
                self._fail_all(RuntimeError(f"the engine loop stopped: {exc!r}"))
            raise

    def _serve(self) -> None:
        while True:
            with self.cv:
                while not (self.closed or self.rows or self.scheduler.has_work()):
                    self.cv.wait()
                if self.closed:
                    self._fail_all(RuntimeError("the engine was closed"))
                    return
                self._drop_cancelled()
                job = self._take_rows() if self.rows else None
                batch = None if job else self.scheduler.schedule()
            if not job and not batch:  # nothing can run now (cannot happen with a checked pool): don't spin
                with self.cv:
                    self.cv.wait(0.01)
                continue
            try:
                if job:
                    self._run_rows(job)
                elif batch:
                    self._step(batch)
            except Exception as exc:  # a step failed: its sequences end with the error, the loop goes on
                traceback.print_exc()
                for seq in job or [s for s, _ in batch]:
                    seq.fail(exc)
                    with self.cv:
                        self.scheduler.remove(seq)

    def _drop_cancelled(self) -> None:
        s = self.scheduler
        for seq in [q for q in list(s.running) + list(s.waiting) if q.cancelled]:
            s.remove(seq)
            seq.finish("cancelled")
        for seq in [q for q in self.rows if q.cancelled]:
            self.rows.remove(seq)
            seq.finish("cancelled")

    def _take_rows(self) -> list[Sequence]:
        """The first row job; plain requests queued behind it (an attention backend's) join it as a batch (up to
        max_batch)."""
        first = self.rows.popleft()
        group = [first]
        if first.params.spec == "none":
            while self.rows and len(group) < self.engine.max_batch and self.rows[0].params.spec == "none":
                group.append(self.rows.popleft())
        return group

    def _run_rows(self, seqs: list[Sequence]) -> None:
        self._row_running = True
        try:
            for _ in row_steps(self.engine, seqs):
                self.steps += 1
                for seq in seqs:
                    if (seq.cancelled or self.closed) and not seq.finished:
                        seq.finish("cancelled")
                if all(seq.finished for seq in seqs):
                    break
        finally:
            self._row_running = False
        self.generated += sum(len(seq.generated) for seq in seqs)
        for seq in seqs:
            seq.finish("length")  # a no-op for a finished sequence; ends one its steps left open

    def _step(self, batch: list[tuple[Sequence, int]]) -> None:
        engine = self.engine
        for seq, _ in batch:
            seq.started()
        n = self._greedy_run(batch)
        if n > 1:
            return self._greedy_steps([seq for seq, _ in batch], n)
        sampled = engine.runner.run_scheduled(engine.pool, batch)  # [(seq, logits [V])] for sequences whose tokens are all computed
        with self.cv:
            self.scheduler.computed(batch)
            self.steps += 1
        # plain greedy rows: one argmax over all of them and one read back (on CUDA, one sync a step, not a row)
        greedy = [(seq, logits) for seq, logits in sampled if seq.plain_greedy]
        picks = {}
        if len(greedy) > 1:
            ids = torch.stack([logits for _, logits in greedy]).argmax(-1).tolist()
            picks = {seq.id: tok for (seq, _), tok in zip(greedy, ids)}
        for seq, logits in sampled:
            if seq.id in picks:
                tok = picks[seq.id]
                seq.sampler.record(tok)
            else:
                tok = seq.sample(logits)
            self.generated += 1
            if seq.append(tok):
                with self.cv:
                    self.scheduler.remove(seq)

    def _greedy_run(self, batch: list[tuple[Sequence, int]]) -> int:
        """Steps the batch may decode back to back without the host in between: > 1 only when every row is a
        plain-greedy decode row, nothing waits (a newcomer would wait the whole run), the batch fits a graph
        bucket, and every sequence has budget and blocks for all of them (taken here)."""
        runner, s = self.engine.runner, self.scheduler
        n = runner.greedy_steps()
        if n <= 1 or s.waiting or len(batch) > runner.paged_buckets[-1]:
            return 1
        for seq, k in batch:
            if k != 1 or seq.num_computed + 1 != seq.num_tokens or not seq.plain_greedy:
                return 1
            n = min(n, seq.budget - len(seq.generated))
        with self.cv:
            if n <= 1 or not all(s.blocks.can_grow(seq, seq.num_computed + n) for seq, _ in batch) or \
                    sum(s.blocks.blocks_for(seq.num_computed + n) - len(seq.block_table) for seq, _ in batch) \
                    > s.blocks.num_free:
                return 1
            for seq, _ in batch:
                s.blocks.grow(seq, seq.num_computed + n)
        return n

    def _greedy_steps(self, seqs: list[Sequence], n: int) -> None:
        """n greedy steps of a decode batch at once (Runner.decode_paged_greedy); a row that stops early has
        its later picks dropped (their K/V lie past its end, in its own blocks, which it frees now)."""
        picks = self.engine.runner.decode_paged_greedy(self.engine.pool, [s.block_table for s in seqs],
                                                       [s.num_computed for s in seqs],
                                                       [s.token_ids[s.num_computed] for s in seqs], n)
        for row in picks:
            for seq, tok in zip(seqs, row):
                if seq.finished:
                    continue
                seq.sampler.record(tok)
                self.generated += 1
                if seq.append(tok):
                    with self.cv:
                        self.scheduler.remove(seq)
        with self.cv:
            self.scheduler.computed([(seq, n) for seq in seqs if not seq.finished])
            self.steps += n

    def _fail_all(self, exc: BaseException) -> None:
        for seq in list(self.scheduler.running) + list(self.scheduler.waiting) + list(self.rows):
            seq.fail(exc)
