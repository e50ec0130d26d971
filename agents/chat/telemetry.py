"""Per-step engine telemetry: what one agent step (one chat-model call) cost the engine, and run totals.

A step may take more than one engine generation (think-then-call decodes the reasoning, then the call), so a
step sums its generations. The dict form (`as_dict`) is the contract: `ChatEngine` puts it in
`response_metadata["telemetry"]`; the survey trace, the chat transcript and the `--stats` tables read it.

Speculative decoding is read from the engine result's `spec` (engine.speculative SpecStats: drafted, accepted).
The attention mode is the result's `attention_mode` when the engine reports one, else what the caller derived
from the engine's sparse backend (EngineRunner asks `Runner.attn.sparse_at(kv_len)` at the prefill and the last
step), else "dense".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

_ATTENTION = ("attention_mode", "attention")  # engine result attributes, first present wins


@dataclass
class StepTelemetry:
    """Engine cost of one step; the additive fields sum over steps, `kv_tokens` is the step's peak."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those served from the engine's prefix cache
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    generations: int = 0  # engine generations (prefills) in the step
    spec_drafted: int = 0  # draft tokens proposed to the target model (0: no speculation)
    spec_accepted: int = 0  # of those, accepted
    attention: str = "dense"  # "dense" | "sparse" | "dense+sparse" when the step's generations differ
    kv_tokens: int = 0  # tokens in the KV cache at the end of the step's longest generation
    kv_capacity: int = 0  # the cache's length (the engine's max_seq_len); 0 when unknown (remote backend)

    @property
    def decode_tok_s(self) -> float:
        """Tokens per second of decoding; each generation's first token comes from its prefill, as in the engine."""
        decoded = self.generated_tokens - self.generations
        return decoded / self.decode_s if decoded > 0 and self.decode_s > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        """Speculative acceptance rate (accepted / drafted), None when nothing was drafted."""
        return self.spec_accepted / self.spec_drafted if self.spec_drafted else None

    @property
    def kv_use(self) -> float:
        return self.kv_tokens / self.kv_capacity if self.kv_capacity else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(decode_tok_s=round(self.decode_tok_s, 2), acceptance=self.acceptance,
                   kv_use=round(self.kv_use, 4))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepTelemetry":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_result(cls, result: Any, kv_capacity: int = 0, attention: str | None = None) -> "StepTelemetry":
        """From one `engine.GenerationResult` (fields a given engine lacks take their defaults)."""
        spec = getattr(result, "spec", None)  # SpecStats when a drafter ran, else None
        return cls(prompt_tokens=result.prompt_tokens, cached_tokens=int(getattr(result, "cached_tokens", 0) or 0),
                   generated_tokens=result.decode_tokens,
                   prefill_s=result.prefill_s, decode_s=result.decode_s, generations=1,
                   spec_drafted=int(getattr(spec, "drafted", 0) or 0),
                   spec_accepted=int(getattr(spec, "accepted", 0) or 0),
                   attention=str(_first(result, _ATTENTION, None) or attention or "dense"),
                   kv_tokens=result.prompt_tokens + result.decode_tokens, kv_capacity=kv_capacity)

    def __add__(self, other: "StepTelemetry") -> "StepTelemetry":
        modes = sorted({m for t in (self, other) if t.generations for m in t.attention.split("+")}) or ["dense"]
        return StepTelemetry(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            generated_tokens=self.generated_tokens + other.generated_tokens,
            prefill_s=self.prefill_s + other.prefill_s, decode_s=self.decode_s + other.decode_s,
            generations=self.generations + other.generations,
            spec_drafted=self.spec_drafted + other.spec_drafted,
            spec_accepted=self.spec_accepted + other.spec_accepted,
            attention="+".join(modes), kv_tokens=max(self.kv_tokens, other.kv_tokens),
            kv_capacity=max(self.kv_capacity, other.kv_capacity))


def total(steps: Iterable[StepTelemetry | dict]) -> StepTelemetry:
    """The run's totals: sums of the additive fields, the peak KV use, every attention mode seen."""
    out = StepTelemetry()
    for step in steps:
        out = out + (step if isinstance(step, StepTelemetry) else StepTelemetry.from_dict(step))
    return out


def summary(steps: list[dict]) -> dict[str, Any]:
    """`{"steps": [...], "total": {...}}`, the block the survey trace and the chat answer event carry."""
    return {"steps": steps, "total": total(steps).as_dict()}


def stats_table(steps: list[dict], label_keys: tuple[str, ...] = ("stage",)) -> str:
    """A plain-text table, one row per step and a total row (what `--stats` prints)."""
    head = ("step", "prompt", "cached", "gen", "prefill s", "decode s", "tok/s", "accept", "attn", "kv use")
    rows = []
    for i, step in enumerate(steps, 1):
        label = " ".join(str(step[k]) for k in label_keys if step.get(k) not in (None, "")) or str(i)
        rows.append(_row(label, StepTelemetry.from_dict(step)))
    rows.append(_row("total", total(steps)))
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def _row(label: str, t: StepTelemetry) -> tuple[str, ...]:
    accept = f"{t.acceptance:.0%}" if t.acceptance is not None else "-"
    kv = f"{t.kv_use:.1%}" if t.kv_capacity else "-"
    return (label[:28], str(t.prompt_tokens), str(t.cached_tokens), str(t.generated_tokens), f"{t.prefill_s:.3f}", f"{t.decode_s:.3f}",
            f"{t.decode_tok_s:.1f}", accept, t.attention, kv)


def _first(obj: Any, names: tuple[str, ...], default: Any) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default
