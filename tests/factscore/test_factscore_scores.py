"""Scores and the per-claim cache: no model needed."""
import math

import pytest

from survey.errors import SurveyError
from survey.factscore.cache import ClaimCache, cache_key
from survey.factscore.scores import length_penalty, per_section, summarize


def claim(section, verdict, citations=(), by_citation=None, method="sentence"):
    return {"section": section, "verdict": verdict, "citations": list(citations),
            "supported_by_citation": by_citation, "method": method}


def test_factscore_length_penalty_matches_factscore():
    assert length_penalty(10) == 1.0 and length_penalty(25) == 1.0
    assert length_penalty(5) == pytest.approx(math.exp(1 - 10 / 5))
    assert length_penalty(0) == 0.0


def test_factscore_summary_and_sections():
    claims = [claim("A", "supported", [1], True), claim("A", "not supported", [2], False),
              claim("B", "supported"), claim("B", "unparsable", [3], False)]
    s = summarize(claims)
    assert s["factscore"] == 0.5 and s["unparsable"] == 1
    assert s["citation_recall"] == 0.75 and s["citation_precision"] == pytest.approx(1 / 3)
    assert s["factscore_length_penalized"] == pytest.approx(0.5 * math.exp(1 - 10 / 4))
    sections = per_section(claims)
    assert [x["section"] for x in sections] == ["A", "B"]
    assert sections[1]["citation_precision"] == 0.0
    assert summarize([])["factscore"] is None


def test_factscore_cache_persists_and_keys_differ(tmp_path):
    path = tmp_path / "c.sqlite"
    key = cache_key("judge", "claim", ["b", "a"], "m", "j", 0)
    assert key == cache_key("judge", "claim", ["a", "b"], "m", "j", 0)
    assert key != cache_key("judge", "claim", ["a", "b"], "m", "j", 1)
    cache = ClaimCache(path)
    cache.put(key, {"label": "supported"})
    cache.close()
    again = ClaimCache(path)
    assert again.get(key) == {"label": "supported"} and again.hits == 1


def test_factscore_bad_cache_file(tmp_path):
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SurveyError):
        ClaimCache(path)
