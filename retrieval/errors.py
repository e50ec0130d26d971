"""Errors raised for a user's mistake in retrieval/; the CLI prints them as one line and exits 2."""


class RetrievalError(Exception):
    """A problem with the user's corpus, index directory or query, with a message that says how to fix it."""
