"""Tiny random models, one per supported architecture, built from transformers configs.

``tiny-<arch>`` aliases give deterministic (seeded) random weights and a byte-level tokenizer, so
tests and the smoke sweep run every adapter without downloading anything.  The sizes are small
(hidden 64, 3 layers, 4 query heads, 2 key/value heads where the architecture has grouped-query
attention) but every structural feature of the real family is kept (parallel attention, ALiBi,
Conv1D projections, partial rotary, tied or untied unembedding, q/k norms, ...).
"""
from __future__ import annotations

from typing import Any

#: model_type -> config keyword arguments (on top of the common ones in ``tiny_config``)
TINY_ARCHS: dict[str, dict[str, Any]] = {
    "gpt_neox": dict(intermediate_size=128, rotary_pct=0.25, use_parallel_residual=True),
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64, do_layer_norm_before=True),
    "bloom": dict(),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=16,
                    intermediate_size=128),
    "gptj": dict(n_inner=128, rotary_dim=8),
    "gpt2": dict(n_inner=128),
    "falcon": dict(new_decoder_architecture=True, num_kv_heads=2, parallel_attn=True, bias=False,
                   alibi=False),
    "llama": dict(intermediate_size=128, num_key_value_heads=2),
    "mistral": dict(intermediate_size=128, num_key_value_heads=2, sliding_window=None),
    "mixtral": dict(intermediate_size=128, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "olmo": dict(intermediate_size=128, num_key_value_heads=2),
    "olmo2": dict(intermediate_size=128, num_key_value_heads=2),
    "phi": dict(intermediate_size=128, partial_rotary_factor=0.5),
    "qwen2": dict(intermediate_size=128, num_key_value_heads=2),
    "qwen3": dict(intermediate_size=128, num_key_value_heads=2, head_dim=16),
    "gemma": dict(intermediate_size=128, num_key_value_heads=1, head_dim=16),
    # head_dim * heads (4 * 24 = 96) differs from hidden (64), as in the real Gemma-3-270M
    "gemma3_text": dict(intermediate_size=128, num_key_value_heads=1, head_dim=24, sliding_window=8,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
}

TINY_VOCAB = 260
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + pad/bos/eos), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {PAD: 0, BOS: 1, EOS: 2}
    for i, ch in enumerate(sorted(byte_chars)):
        vocab[ch] = 3 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   model_max_length=256)
    fast.padding_side = "left"
    return fast


def tiny_config(arch: str, **overrides):
    """The transformers config of ``tiny-<arch>`` (overrides change sizes, e.g. hidden_size)."""
    from transformers import AutoConfig

    kwargs = dict(vocab_size=TINY_VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=arch not in ("gpt_neox", "gptj"))
    kwargs.update(TINY_ARCHS[arch])
    kwargs.update(overrides)
    if arch == "gpt_neo":
        n = kwargs["num_hidden_layers"]
        kwargs["attention_types"] = [[["global", "local"], n // 2], [["global"], n - 2 * (n // 2)]]
        kwargs["attention_types"] = [t for t in kwargs["attention_types"] if t[1] > 0]
    if arch == "gemma3_text":
        n = kwargs["num_hidden_layers"]
        kwargs["layer_types"] = [("full_attention" if (i + 1) % 3 == 0 else "sliding_attention")
                                 for i in range(n)]
    if arch == "bloom":
        kwargs.pop("max_position_embeddings")
    cfg = AutoConfig.for_model(arch, **kwargs)
    if hasattr(cfg, "_attn_implementation"):
        pass
    return cfg


def build_tiny(arch: str, seed: int = 0, dtype: str = "float32", **overrides):
    """(model, tokenizer) of ``tiny-<arch>``: random weights drawn from ``seed`` (deterministic)."""
    return build_from_config(tiny_config(arch, **overrides), seed=seed, dtype=dtype)


def build_from_config(cfg, seed: int = 0, dtype: str = "float32"):
    """(model, byte tokenizer) of a transformers config with random weights drawn from ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    finally:
        torch.random.set_rng_state(gen_state)
    model.eval()
    return model, byte_tokenizer()
