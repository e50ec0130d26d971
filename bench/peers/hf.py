"""HF transformers peer: eager bf16 `generate` on a random-init LlamaForCausalLM of the same shape.

MiniCPM4's own modeling code is remote code (not installable offline); a Llama of the same hidden size,
layers, heads, kv heads, intermediate size and vocabulary does the same work per token (MiniCPM's muP
scalings are a few elementwise multiplies), so it stands in for it here.
"""
from __future__ import annotations

import torch

from bench.peers.shapes import Shape


def build(s: Shape, device: str = "cuda"):
    """A random-init LlamaForCausalLM in bf16, built on the device (no CPU init of billions of weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                      num_key_value_heads=s.kv_heads, intermediate_size=s.inter, vocab_size=s.vocab,
                      rms_norm_eps=s.eps, tie_word_embeddings=s.tied, max_position_embeddings=32768)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def time_generate(model, batch: int, prompt_len: int, gen_len: int) -> dict:
    """`generate` greedy for exactly gen_len tokens; decode time = full run - a 1-token run (the prefill)."""
    idx = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device="cuda")
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)

    def run(n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.no_grad():
            model.generate(idx, max_new_tokens=n, min_new_tokens=n, **kw)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)

    run(4)  # warm-up
    prefill_ms = run(1)
    decode_ms = (run(gen_len) - prefill_ms) / (gen_len - 1)
    return {"prefill_ms": prefill_ms, "decode_ms_per_step": decode_ms, "decode_tok_s": batch * 1e3 / decode_ms}
