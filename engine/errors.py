"""Errors the engine raises for a user's mistake (bad checkpoint, unknown alias, over-long prompt).

The CLI prints these as one line and exits 2; anything else is a bug and keeps its traceback.
"""


class EngineError(Exception):
    """A problem with the user's model, checkpoint or request, with a message that says how to fix it."""


class AssetMissing(EngineError):
    """A default model asset is not installed on this machine."""
