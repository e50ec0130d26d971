"""`cpm serve`'s front door: a bounded number of requests in flight (generating or queued in the engine's
scheduler), past which the server answers 503 with Retry-After instead of queueing without bound, and the
Prometheus text of /metrics.

Every route runs its generation in a worker thread that blocks on the engine's stream, so the thread pool must
hold every admitted request at once: `executor_for` sizes it from the same bound (asyncio's default pool has
min(32, cores + 4) threads, 6 on the 2-core default machine, which would hold the 7th client back before the
scheduler ever saw it).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tui.serve_requests import RequestError


class Admission:
    """Counts admitted requests on the event loop's thread (no lock needed); `enter` refuses past `limit`."""

    def __init__(self, limit: int):
        self.limit, self.active, self.refused = limit, 0, 0

    def enter(self) -> "Ticket":
        if self.active >= self.limit:
            self.refused += 1
            raise RequestError(f"The server is busy: {self.active} requests are running or queued (the limit is "
                               f"{self.limit}, `cpm serve --max-waiting`). Retry shortly.", 503, None, "server_busy")
        self.active += 1
        return Ticket(self)


class Ticket:
    """One admitted request; `release` may be called more than once (a stream's close and its end both do)."""

    def __init__(self, admission: Admission):
        self.admission, self.held = admission, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.active -= 1


def executor_for(admission: Admission) -> ThreadPoolExecutor:
    """Threads for every admitted request plus a few for tokenizing, embedding and the like."""
    return ThreadPoolExecutor(max_workers=admission.limit + 8, thread_name_prefix="cpm-serve")


class Metrics:
    """Prometheus text exposition of the engine's scheduler (names in vLLM's style, `cpm:` prefix). Counters are
    totals since start; `cpm:generation_tokens_per_second` is the rate since the previous scrape."""

    def __init__(self, engine, admission: Admission, model_name: str):
        self.engine, self.admission, self.model = engine, admission, model_name
        self.last = (time.monotonic(), 0)

    def render(self) -> str:
        s = self.engine.stats()
        now = time.monotonic()
        then, generated = self.last
        rate = (s.generated_tokens - generated) / (now - then) if now > then else 0.0
        self.last = (now, s.generated_tokens)
        usage = (s.kv_blocks_used / s.kv_blocks_total) if s.kv_blocks_total else 0.0
        hit = (s.cached_tokens / s.prompt_tokens) if s.prompt_tokens else 0.0
        rows = [
            ("num_requests_running", "gauge", "Sequences holding KV blocks (prefilling or decoding).", s.running),
            ("num_requests_waiting", "gauge", "Sequences queued in the scheduler (new or preempted).", s.waiting),
            ("num_requests_admitted", "gauge", "Requests the server holds (running, queued or streaming out).",
             self.admission.active),
            ("request_limit", "gauge", "Requests admitted before the server answers 503.", self.admission.limit),
            ("requests_refused_total", "counter", "Requests answered 503 because the limit was reached.",
             self.admission.refused),
            ("kv_blocks_used", "gauge", "KV cache blocks referenced by a live sequence.", s.kv_blocks_used),
            ("kv_blocks_total", "gauge", "KV cache blocks in the pool.", s.kv_blocks_total),
            ("kv_blocks_cached", "gauge", "Free KV blocks still holding a reusable prefix.", s.kv_blocks_cached),
            ("kv_cache_usage_perc", "gauge", "Fraction of KV blocks in use.", usage),
            ("prompt_tokens_total", "counter", "Prompt tokens of admitted sequences.", s.prompt_tokens),
            ("prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
             s.cached_tokens),
            ("prefix_cache_hit_rate", "gauge", "Share of prompt tokens served from the prefix cache.", hit),
            ("generation_tokens_total", "counter", "Tokens generated.", s.generated_tokens),
            ("generation_tokens_per_second", "gauge", "Tokens generated per second since the previous scrape.", rate),
            ("scheduler_steps_total", "counter", "Scheduler steps run.", s.steps),
            ("num_preemptions_total", "counter", "Sequences preempted (recomputed) when blocks ran out.",
             s.preemptions),
        ]
        out = []
        for name, kind, text, value in rows:
            out += [f"# HELP cpm:{name} {text}", f"# TYPE cpm:{name} {kind}",
                    f'cpm:{name}{{model_name="{self.model}"}} {float(value):g}']
        return "\n".join(out) + "\n"
