"""Prompts of the survey graph: constants with named placeholders, kept short for small models."""

SYSTEM = "You are a careful research assistant who writes concise, factual survey text about scientific papers."

PLAN = """Plan a survey on the topic: {topic}

Papers found in the library:
{titles}

List {n} section headings for the survey body, one per line, in the form
Heading: one sentence on what the section covers
Do not include Introduction or Conclusion."""

QUERIES = """A survey on "{topic}" has a section "{title}" ({goal}).
Write {n} short search queries to find papers for this section, one per line."""

WRITE = """Sources:
{sources}

Write the section "{title}" of a survey on {topic}. Goal: {goal}
Write about {words} words of plain prose (no headings, no lists). After each claim, cite the source it comes
from with its number in brackets, like [1] or [2]. Cite at least {min_citations} different sources. Use only
the sources above."""

SUMMARY = """Paper [{n}]: {title}
Abstract: {abstract}

In {words} words, say what this paper contributes to "{section}": its method or finding. Use the abstract's
words. End with [{n}]."""

SUMMARY_RETRY = """Paper [{n}]: {title}
Abstract: {abstract}

Copy the one sentence of this abstract that best states the paper's main result, then add [{n}]."""

REVISE = """Sources:
{sources}

Draft of the section "{title}":
{draft}

Problems: {problems}

Rewrite the section in about {words} words of plain prose. Cite only the numbered sources above, like [1],
each right after the claim it supports, and cite at least {min_citations} different sources."""

INTRO = """Sources:
{sources}

Write the introduction of a survey titled "{title}". The survey has these sections: {sections}.
Write about {words} words: why the topic matters and what the survey covers. Cite sources like [1]."""

CONCLUSION = """A survey titled "{title}" covered these sections:
{summaries}

Write a conclusion of about {words} words: the main trends and open problems. No citations."""
