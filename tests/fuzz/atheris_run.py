"""Coverage-guided fuzzing with atheris (libFuzzer) of the same targets the hypothesis tests use.

    python tests/fuzz/atheris_run.py gguf -atheris_runs=200000 [corpus_dir]
    python tests/fuzz/atheris_run.py hf_config|request ...

Any exception other than the target's own error type stops the run with the input that raised it (saved by
libFuzzer as crash-*); -timeout=N makes a slow input a failure too. test_fuzz_atheris.py runs a short session of
each when atheris is installed (pip install atheris)."""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

with atheris.instrument_imports(include=["engine", "tui", "pydantic"]):
    import fuzz_targets

TARGETS = {"gguf": fuzz_targets.gguf, "hf_config": fuzz_targets.hf_config, "request": fuzz_targets.request_bytes}


def main() -> None:
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, lambda data: target(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
