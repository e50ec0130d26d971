"""Request batching for `cpm serve`: waiting non-streaming requests that share their sampling settings are
decoded together in one `Engine.generate_batch` call (one forward pass per step for the whole group).

Only requests without logits processors batch (a grammar keeps per-request matcher state that the batched loop
does not drive); the rest, and every streaming request, run one at a time. Batches and single requests take the
same FIFO lock, so arrival order is kept between them. A request whose client has gone (its `cancel` Event
set) is dropped while it waits and, run alone, stops decoding at its next piece; inside a running batch it
finishes with the others.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from agents.chat.engine_runner import ChatReply, EngineRunner, Prepared
from tui.serve_common import drain_in_thread


def batch_key(prep: Prepared) -> tuple | None:
    """Requests with equal keys can share one batch; None = this request runs alone."""
    p = prep.params
    if p.logits_processors or p.spec != "none":
        return None
    return (p.max_tokens, p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty, p.seed,
            tuple(p.stop), tuple(p.stop_token_ids))


@dataclass
class BatchStats:
    requests: int = 0  # requests served through the batcher
    batches: int = 0  # engine calls they took (requests / batches = mean batch size)
    largest: int = 0


class Batcher:
    """Collects requests while the engine is busy, then serves them max_batch at a time."""

    def __init__(self, runner: EngineRunner, fifo: asyncio.Lock, max_batch: int):
        self.runner, self.fifo, self.max_batch = runner, fifo, max_batch
        self.pending: list[tuple[Prepared, tuple, asyncio.Future, threading.Event]] = []
        self.stats = BatchStats()

    async def submit(self, prep: Prepared, cancel: threading.Event | None = None) -> ChatReply | None:
        """The request's reply, or None when `cancel` was set (its client has gone) before it finished."""
        cancel = cancel or threading.Event()
        key = batch_key(prep)
        if key is None or self.max_batch <= 1:
            async with self.fifo:
                return None if cancel.is_set() else await run_alone(self.runner, prep, cancel)
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((prep, key, fut, cancel))
        async with self.fifo:
            if not fut.done():  # an earlier holder of the lock may already have served this request
                await self._serve_group(key)
        return await fut

    async def _serve_group(self, key: tuple) -> None:
        group = [item for item in self.pending if item[1] == key][:self.max_batch]
        for item in group:
            self.pending.remove(item)
        for item in [item for item in group if item[3].is_set()]:  # gone while waiting: not decoded
            group.remove(item)
            item[2].set_result(None)
        if not group:
            return
        preps = [prep for prep, *_ in group]
        try:
            replies = await asyncio.to_thread(self._generate, preps)
        except Exception as exc:  # every request of the group learns why
            for _, _, fut, _ in group:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.stats.requests += len(group)
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(group))
        for (_, _, fut, _), reply in zip(group, replies):
            if not fut.done():  # a client that went away cancelled its future
                fut.set_result(reply)

    def _generate(self, preps: list[Prepared]) -> list[ChatReply]:
        runner = self.runner
        with runner.lock:
            if len(preps) == 1:
                results = [runner.engine.generate(preps[0].prompt_ids, preps[0].params)]
            else:
                results = runner.engine.generate_batch([p.prompt_ids for p in preps], preps[0].params)
        return [runner._reply(p.prefix + r.text, p, r) for p, r in zip(preps, results)]


async def run_alone(runner: EngineRunner, prep: Prepared, cancel: threading.Event) -> ChatReply | None:
    """One request decoded by itself through the runner's stream, so a set `cancel` stops it at its next piece."""
    reply = None
    async for item in drain_in_thread(lambda: runner.stream_prepared(prep), cancel):
        if isinstance(item, Exception):
            raise item
        if isinstance(item, ChatReply):
            reply = item
    return reply
