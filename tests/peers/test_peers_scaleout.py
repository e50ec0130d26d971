"""Scale-out on real vLLM: two vLLM instances serve one evaluation and one survey through the OpenAI client's
several base URLs (`--base-url A --base-url B`); each server's own access log shows it took a share."""
from __future__ import annotations

import json

import pytest

from peer_helpers import TOPIC, cpm, start_peer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # two vLLM start-ups and two runs
COMPLETIONS = '"POST /v1/chat/completions HTTP/1.1" 200'


@pytest.fixture(scope="module")
def two_vllm(peer_logs):
    servers = [start_peer("vllm", peer_logs) for _ in range(2)]  # started together: their start-ups overlap
    try:
        yield [s.ready() for s in servers]
    finally:
        for s in servers:
            s.stop()


def _served(servers) -> list[int]:
    return [s.log_path.read_text(errors="replace").count(COMPLETIONS) for s in servers]


def test_two_vllm_serve_one_bfcl_run_and_one_survey(two_vllm, tmp_path, shared_data, peers_index):
    before = _served(two_vllm)
    urls = [arg for s in two_vllm for arg in ("--base-url", s.url)]
    cpm("eval", "bfcl", "--data", str(shared_data / "bfcl"), "--limit", "8", "--constrained", "--backend", "openai",
        *urls, "--out", str(tmp_path / "bfcl"))
    records = (tmp_path / "bfcl" / "bfcl_results.jsonl").read_text().splitlines()
    assert len(records) >= 8 and all(json.loads(r)["mode"] == "constrained" for r in records)
    after_bfcl = _served(two_vllm)
    assert all(a > b for a, b in zip(after_bfcl, before)), (before, after_bfcl)  # both took cases

    out = tmp_path / "survey.md"
    cpm("survey", TOPIC, "--index", str(peers_index), "--sections", "3", "--parallel", "3", "--quiet",
        "--backend", "openai", *urls, "--out", str(out))
    assert "## References" in out.read_text()
    after_survey = _served(two_vllm)
    assert all(a > b for a, b in zip(after_survey, after_bfcl)), (after_bfcl, after_survey)
