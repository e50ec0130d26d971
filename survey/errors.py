"""Errors raised for a user's mistake in survey/; the CLI prints them as one line and exits 2."""


class SurveyError(Exception):
    """A problem with a survey request, a survey file or its citations, with a message that says how to fix it."""
