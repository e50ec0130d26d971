"""Widgets of the TUI: one per panel."""
