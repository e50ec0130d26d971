"""A test double for the chat backend, for the tests of the graph's plumbing (retry, resume, empty index).

It is no language model: it answers each survey prompt by quoting the sources the prompt lists, so the
plumbing tests run in seconds. The real default model is exercised by test_survey_acceptance.py.
"""
from __future__ import annotations

import json
import re

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class QuotingChat(BaseChatModel):
    """Answers survey prompts from their own text; raises on the calls listed in `fail_on` (1-based)."""

    fail_on: list[int] = []
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "quoting-test-double"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError(f"backend went away (scripted failure on call {self.calls})")
        prompt = messages[-1].content
        if prompt.startswith("Name the research topic"):
            # the last listed title, as a heading: what a weak model does; the heading check must refuse it
            text = json.dumps({"heading": re.findall(r"^- (.+)$", prompt, re.M)[-1]})
        elif "Rewrite the passage" in prompt:
            text = json.dumps({"sentence": prompt.split(". ")[0]})  # a copy: the grounding check must refuse it
        elif "search queries" in prompt:
            text = "\n".join(re.findall(r'section "([^"]+)"', prompt))
        else:
            text = " ".join(f"{abstract.split('. ')[0]} [{n}]." for n, abstract in
                            re.findall(r"^\[(\d+)\] [^:]+: (.+)$", prompt, re.M))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])
