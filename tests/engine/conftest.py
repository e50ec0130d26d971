"""Make `import engine` mean the package, not this folder.

pytest (prepend import mode) puts tests/ on sys.path, where tests/engine/ (no __init__.py) is a namespace
package named `engine` that shadows the editable install. The repo root goes first; the lasting fix is
`pythonpath = ["."]` in pyproject's pytest options (lead's file).
"""
import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
_mod = sys.modules.get("engine")
if _mod is not None and getattr(_mod, "__file__", None) is None:  # the namespace impostor, imported earlier
    for _name in [n for n in sys.modules if n == "engine" or n.startswith("engine.")]:
        del sys.modules[_name]
