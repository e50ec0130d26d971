"""Collapsed blocks under a chat turn: what the engine did for each agent step, and the model's reasoning."""
from __future__ import annotations

from textual.widgets import Collapsible, Static

from agents.chat.telemetry import StepTelemetry, stats_table


class TelemetryBlock(Collapsible):
    """One row per step (model call) and the total: tokens, prefill/decode time, tok/s, speculative acceptance,
    attention mode, KV-cache use. `telemetry` is the `{"steps", "total"}` block agents attach to their results."""

    def __init__(self, telemetry: dict, label_keys: tuple[str, ...] = ("step",)):
        steps = telemetry.get("steps") or []
        total = StepTelemetry.from_dict(telemetry.get("total") or {})
        title = (f"engine · {len(steps)} step{'s' * (len(steps) != 1)} · {total.prompt_tokens} in / "
                 f"{total.generated_tokens} out · {total.decode_tok_s:.1f} tok/s")
        table = Static(stats_table(steps, label_keys=label_keys), markup=False, classes="telemetry-table")
        super().__init__(table, title=title, collapsed=True, classes="telemetry")


class ReasoningBlock(Collapsible):
    """The reasoning a model wrote before its answer or call, streamed in, kept apart from both."""

    def __init__(self):
        self.text = ""
        self.body = Static("", markup=False, classes="reasoning-text")
        super().__init__(self.body, title="reasoning", collapsed=True, classes="reasoning")

    def append(self, piece: str) -> None:
        self.text += piece
        self.body.update(self.text)
