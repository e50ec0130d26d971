"""Turn a GGUF model file into a Hugging Face folder that vLLM 0.32 for CPUs can load (its core reads no GGUF).

Runs in the vLLM peer's venv (.peers/vllm: transformers, gguf, accelerate). transformers dequantizes the GGUF
when it loads it, but refuses to `save_pretrained` a model it marks GGUF-quantized, so a fresh model is built
from the same config and given the loaded weights; the tokenizer is written from the GGUF's own metadata too.
Usage: python bench/peers/gguf_to_hf.py MODEL.gguf OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.bfloat16, **kwargs)
    config = AutoConfig.from_pretrained(str(gguf.parent), **kwargs)
    config.torch_dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
