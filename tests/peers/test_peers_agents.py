"""The agents, unchanged, on real peers (vLLM for CPUs, llama-server) with the default model: a 3-section survey
whose citations resolve, FactScore with the chat model as judge, a chat turn with a forced
call to a real MCP server, and BFCL in constrained mode. Each command runs as a user would run it, with
`--backend openai --base-url URL`; nothing in the agents knows which server is behind the URL."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest

from peer_helpers import TOPIC, cpm

# slow; and past the suite's 600 s per-test timeout: on the loaded 2-core box a FactScore or BFCL run on a peer
# takes 10-25 min
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def survey(peer, peers_index, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"survey-{peer.kind}") / "survey.md"
    cpm("survey", TOPIC, "--index", str(peers_index), "--sections", "3", "--parallel", "3", "--quiet",
        "--backend", "openai", "--base-url", peer.url, "--out", str(out))
    return out


def test_peer_survey_three_sections_with_resolving_citations(survey, peers_index):
    text = survey.read_text()
    body, _, references = text.partition("## References")
    assert len(re.findall(r"^## ", body, re.M)) >= 3, text[:2000]
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", body)}
    listed = dict(re.findall(r"^\[(\d+)\] .*arXiv:(\S+)$", references, re.M))
    assert cited and cited <= {int(n) for n in listed}, (sorted(cited), sorted(listed))
    indexed = set((peers_index / "ids.txt").read_text().split())
    assert set(listed.values()) <= indexed  # every reference is a paper of the index


def test_peer_factscore_with_the_chat_model(survey, peer, peers_index):
    report = survey.with_suffix(".factscore.json")
    cpm("eval", "factscore", str(survey), "--index", str(peers_index), "--judge", "chat", "--extract", "sentence",
        "--out", str(report), "--backend", "openai", "--base-url", peer.url)
    data = json.loads(report.read_text())
    assert data["claims"] and data["judge"].startswith("chat"), {k: data[k] for k in ("judge", "problems")}
    assert all(c["verdict"] for c in data["claims"])
    assert data["references"] and all(r["doc_id"] for r in data["references"].values())  # citations resolve
    assert 0.0 <= data["factscore"] <= 1.0


def test_peer_chat_forced_call_to_a_real_mcp_server(peer, tmp_path):
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"time": {"command": str(Path(sys.executable).parent /
                                                                          "mcp-server-time")}}}))
    out = cpm("chat", "--mcp", str(config), "--once", "What time is it in Tokyo?", "--tool-choice", "required",
              "--approve", "never", "--json", "--sessions", str(tmp_path / "s.sqlite"), "--max-tokens", "96",
              "--backend", "openai", "--base-url", peer.url)
    trace = json.loads(out.stdout[out.stdout.index("{"):])
    calls = trace["tool_calls"]
    # which of the server's two tools the 135M model picks is its own business; the call must fit that tool's schema
    required = {"time.get_current_time": ["timezone"],
                "time.convert_time": ["source_timezone", "time", "target_timezone"]}
    assert calls and calls[0]["name"] in required, trace
    jsonschema.validate(calls[0]["args"], {"type": "object", "required": required[calls[0]["name"]],
                                           "properties": {k: {"type": "string"} for k in required[calls[0]["name"]]}})
    assert calls[0]["result"] and trace["answer"] is not None


def test_peer_bfcl_constrained(peer, tmp_path, shared_data):
    out = tmp_path / "bfcl"
    # --tool-choice required: the peer's own guided decoding makes the calls (with the GGUF's template, which has
    # no tools, `auto` turns get prose on both peers: docs/deploy.md)
    cpm("eval", "bfcl", "--data", str(shared_data / "bfcl"), "--limit", "5", "--constrained", "--tool-choice",
        "required", "--backend", "openai", "--base-url", peer.url, "--out", str(out))
    records = [json.loads(line) for line in (out / "bfcl_results.jsonl").read_text().splitlines()]
    assert len(records) >= 5 and all(r["mode"] == "constrained" for r in records)
    forced = [r for r in records if r["tool_choice"] == "required"]
    assert forced and all(r["result"] for r in forced), [(r["id"], r["raw"]) for r in forced if not r["result"]]
