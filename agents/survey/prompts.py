"""Prompts of the survey graph: constants with named placeholders, kept short for small models."""

SYSTEM = "You are a careful research assistant who writes concise, factual survey text about scientific papers."

# One example: a 135M model names the group after the prompt's own labels without it. A copied example
# heading fails the heading check (its words are not in the group's papers).
NAME = """Name the research topic that a group of papers shares, in 2 to 5 words.

Titles:
- Fast Inference from Transformers via Speculative Decoding
- Medusa: LLM Inference Acceleration with Multiple Decoding Heads
Heading: Speculative Decoding with Draft Heads

Titles:
{titles}
Heading:"""

REWRITE = """{passage}

Rewrite the passage above as one sentence of a survey: start with the method's name or "The authors", keep
its facts, change the wording, 15 to 35 words."""

QUERIES = """A survey on "{topic}" has a section "{title}" ({goal}).
Write {n} short search queries to find papers for this section, one per line."""

WRITE = """Sources:
{sources}

Write the section "{title}" of a survey on {topic}. Goal: {goal}
Write about {words} words of plain prose (no headings, no lists). After each claim, cite the source it comes
from with its number in brackets, like [1] or [2]. Cite at least {min_citations} different sources. Use only
the sources above."""

REVISE = """Sources:
{sources}

Draft of the section "{title}":
{draft}

Problems: {problems}

Rewrite the section in about {words} words of plain prose. Cite only the numbered sources above, like [1],
each right after the claim it supports, and cite at least {min_citations} different sources."""
