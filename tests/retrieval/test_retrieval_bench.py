"""`cpm bench retrieval` on a small case: flat and IVF rows with build time, p50/p99 and recall; size errors."""
from __future__ import annotations

import json

import pytest


def test_retrieval_bench_small_run_writes_json(tmp_path):
    from bench.retrieval import main

    out = tmp_path / "r.json"
    assert main(["--sizes", "4000", "--dim", "32", "--queries", "30", "--embed-docs", "0", "--data", "clustered",
                 "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    flat, ivf = result["search"]
    assert (flat["index"], ivf["index"]) == ("flat-ip", "ivf-flat-ip")
    assert flat["n"] == ivf["n"] == 4000
    for row in (flat, ivf):
        assert row["build_s"] >= 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    # nlist follows the builder's rule (4*sqrt(n), at most n/39); the sample is all 4,000 vectors.
    assert ivf["nlist"] == 102 and ivf["trained_on"] == 4000
    # Clustered data with 16 of 102 lists probed: IVF finds most of the exact neighbours.
    assert ivf["recall@10_vs_flat"] >= 0.5
    assert len(result["loadavg_start"]) == len(result["loadavg_end"]) == 3


@pytest.mark.parametrize("sizes, message", [("1e6", "not a comma-separated list"), ("50", "at least 100")])
def test_retrieval_bench_rejects_bad_sizes(capsys, sizes, message):
    from bench.retrieval import main

    with pytest.raises(SystemExit) as exc:
        main(["--sizes", sizes])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
