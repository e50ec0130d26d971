"""`cpm doctor`: what this machine has for cpm-suite, and the command that fixes each missing piece."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import platform
import sys

from engine.assets import ASSETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, torch/CUDA, triton, faiss and the model assets")
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def checks() -> list[tuple[str, bool, str]]:
    """(name, ok, detail-or-fix) for every piece the suite needs."""
    rows = [("python", sys.version_info >= (3, 11), f"{platform.python_version()} (needs >= 3.11)")]
    torch_v = _version("torch")
    if torch_v:
        import torch

        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA (CPU engine)"
        rows.append(("torch", True, f"{torch_v}; {cuda}"))
    else:
        rows.append(("torch", False, "missing: pip install torch==2.13.0 (CPU) or your CUDA build"))
    for dist, module in (("triton", "triton"), ("faiss-cpu", "faiss"), ("transformers", "transformers"),
                         ("sentence-transformers", "sentence_transformers"), ("gguf", "gguf"),
                         ("mcp", "mcp"), ("langgraph", "langgraph"), ("textual", "textual")):
        v = _version(dist)
        try:
            if v:
                importlib.import_module(module)
            rows.append((dist, bool(v), v or f"missing: pip install {dist}"))
        except Exception as exc:  # a broken install is still a missing piece, with its reason
            rows.append((dist, False, f"{v} installed but import failed ({exc}); reinstall: pip install {dist}"))
    for asset in ASSETS.values():
        path = asset.locate()
        rows.append((f"model {asset.alias}", path is not None, str(path) if path else f"missing: {asset.install_command}"))
    return rows


def run(args: argparse.Namespace) -> int:
    from tui.console import output_console

    console = output_console()
    rows = checks()
    for name, ok, detail in rows:
        console.print(f"{'[green]ok[/]  ' if ok else '[red]FAIL[/]'} {name:<24} {detail}", highlight=False)
    missing = [name for name, ok, _ in rows if not ok]
    if missing:
        console.print(f"[red]missing:[/] {', '.join(missing)} (fix with the commands above)")
        return 1
    console.print("[green]all good[/]")
    return 0
