#!/bin/bash
# One device call of GPU checks and benchmarks for the kernel issues (run from the project root on the GPU host;
# results under $OUT). Steps are named on the command line and run in that order, each under its own time limit
# so one that overruns leaves the others' numbers:
#   info      nvidia-smi, torch / Triton versions, ncu present
#   ncu       Nsight Compute profile of the 8B M = 1 int4 GEMVs + tinygemm (bench/device_gemv_profile.py)
#   int4      cpm bench int4 --shape 8b --m 1 (int4sweep: with --gemv2-sweep; int4_05: the 0.5B shape)
#   tests     pytest -m gpu tests/kernels tests/infllm tests/speculative/test_spec_gpu.py
#   engine8   cpm bench engine --shape 8b --quant int4 --compare gptfast
#   engine05  cpm bench engine --shape 0.5b --quant int4 --compare gptfast
#   attn      cpm bench attention --shape 8b --context 128k --whole-model 128k --breakdown
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
bench() { python3 -c "import sys; from bench.$1 import main; sys.exit(main(sys.argv[1:]))" "${@:2}"; }
step() {  # step NAME LIMIT_S COMMAND...: time-limited, logged, never fatal
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@"
  echo "=== $name rc=$? in $((SECONDS - t0)) s"
}
for what in "$@"; do
  case $what in
    info) step info 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader;
          python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())";
          which ncu && ncu --version | tail -1' ;;
    ncu) step ncu 70 bash -c "ncu --clock-control none --profile-from-start off --set full -f -o $OUT/gemv \
           python3 bench/device_gemv_profile.py --tinygemm && ncu -i $OUT/gemv.ncu-rep --page details > $OUT/ncu_details.txt \
           && ncu -i $OUT/gemv.ncu-rep --page raw --csv > $OUT/ncu_raw.csv; \
           ncu -i $OUT/gemv.ncu-rep --page source --csv --print-source sass --kernel-name regex:gemv2 > $OUT/ncu_sass.csv 2>&1 || true" ;;
    int4) step int4 80 bench int4 --shape 8b --m 1 ;;
    int4sweep) step int4sweep 150 bench int4 --shape 8b --m 1 --gemv2-sweep ;;
    int4_05) step int4_05 90 bench int4 --shape 0.5b --m 1 ;;
    tests) step tests 170 env TRITON_CACHE_AUTOTUNING=0 python3 -m pytest -q -m gpu -p no:cacheprovider \
             tests/kernels tests/infllm tests/speculative/test_spec_gpu.py -n 4 --timeout 200 -rfE ;;
    engine8) step engine8 150 bench engine --shape 8b --quant int4 --compare gptfast ;;
    engine05) step engine05 120 bench engine --shape 0.5b --quant int4 --compare gptfast ;;
    attn) step attn 140 bench attention --shape 8b --context 128k --whole-model 128k --breakdown ;;
    *) echo "unknown step $what" ;;
  esac
done
