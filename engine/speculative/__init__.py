"""Speculative decoding: drafters propose token trees, the target model verifies them in one pass (lossless)."""
from engine.speculative.drafter import Draft, Drafter

__all__ = ["Draft", "Drafter"]
