"""Architecture adapters: where each tap lives in a transformers causal LM.

For every supported ``config.model_type`` the table ``ARCHITECTURES`` names (as attribute paths)
the list of decoder blocks, the attention module of a block, its output projection (whose *input*
is the per-head attention output, ``[heads * head_dim]``, grouped-query attention included), the
final norm and the unembedding.  ``Adapter`` binds one table row to a loaded model.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from cape_hpc.errors import OptionError


@dataclass(frozen=True)
class ArchSpec:
    family: str            # the paper's family name(s), for messages
    layers: str            # path from the CausalLM to the ModuleList of decoder blocks
    attn: str              # path inside a block to the attention module
    out_proj: str          # path inside a block to the attention output projection
    final_norm: str        # path from the CausalLM to the final norm
    unembed: str = "lm_head"
    post_norm: str | None = None   # a projection between final norm and unembedding (OPT project_out)
    conv1d: bool = False           # GPT-2 Conv1D: weight is [in, out]
    attn_adds_residual: bool = False  # BLOOM's attention returns dense(x) + residual
    float32_softmax: bool = False  # the eager attention casts its scores to float32 for the softmax (BLOOM)


ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt_neox": ArchSpec("GPT-NeoX (Pythia)", "gpt_neox.layers", "attention", "attention.dense",
                         "gpt_neox.final_layer_norm"),
    "opt": ArchSpec("OPT", "model.decoder.layers", "self_attn", "self_attn.out_proj",
                    "model.decoder.final_layer_norm", post_norm="model.decoder.project_out"),
    "bloom": ArchSpec("BLOOM", "transformer.h", "self_attention", "self_attention.dense",
                      "transformer.ln_f", attn_adds_residual=True, float32_softmax=True),
    "gpt_neo": ArchSpec("GPT-Neo", "transformer.h", "attn.attention", "attn.attention.out_proj",
                        "transformer.ln_f"),
    "gptj": ArchSpec("GPT-J", "transformer.h", "attn", "attn.out_proj", "transformer.ln_f"),
    "gpt2": ArchSpec("GPT-2 (Cerebras-GPT)", "transformer.h", "attn", "attn.c_proj", "transformer.ln_f",
                     conv1d=True),
    "falcon": ArchSpec("Falcon", "transformer.h", "self_attention", "self_attention.dense",
                       "transformer.ln_f"),
    "phi": ArchSpec("Phi", "model.layers", "self_attn", "self_attn.dense", "model.final_layernorm"),
}
for _mt, _fam in [("llama", "Llama 1-3, Yi, SmolLM2"), ("mistral", "Mistral"), ("mixtral", "Mixtral (MoE)"), ("olmo", "OLMo"),
                  ("olmo2", "OLMo-2"), ("qwen2", "Qwen2 / Qwen2.5"), ("qwen3", "Qwen3"),
                  ("gemma", "Gemma"), ("gemma2", "Gemma-2"), ("gemma3_text", "Gemma-3")]:
    ARCHITECTURES[_mt] = ArchSpec(_fam, "model.layers", "self_attn", "self_attn.o_proj", "model.norm")

SUPPORTED_ARCHITECTURES = tuple(sorted(ARCHITECTURES))


def _get(obj, path: str):
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


_FLOAT32_FLOOR = -1e30   # a masked score: exp() is 0 next to any real score, and finite in float32


def _mask_within_float32(module, args, kwargs):
    """Forward pre-hook of an attention that takes its softmax in float32: a float64 additive mask's
    ``finfo(float64).min`` becomes -inf in float32, so a fully masked query row (a left-padding
    position) turns NaN, and 0 x NaN then reaches every real row of the next layer through the values.
    The mask is clamped to a floor that stays finite in float32; the real rows are unchanged."""
    mask = kwargs.get("attention_mask")
    if mask is None or mask.dtype != torch.float64:
        return None
    return args, {**kwargs, "attention_mask": mask.clamp(min=_FLOAT32_FLOOR)}


def get_spec(model_type: str) -> ArchSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise OptionError(f"unsupported architecture {model_type!r}; supported model types: "
                          f"{', '.join(SUPPORTED_ARCHITECTURES)}") from None


class Adapter:
    """Where the taps of one loaded model live, plus the shapes the hooks need."""

    def __init__(self, model: torch.nn.Module):
        config = model.config
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        self.model = model
        self.config = config
        self.model_type = config.model_type
        self.spec = get_spec(self.model_type)
        self.layers = list(_get(model, self.spec.layers))
        self.n_layers = len(self.layers)
        self.n_heads = int(_cfg(config, "num_attention_heads", "n_head", "num_heads"))
        self.d_model = int(_cfg(config, "hidden_size", "n_embd", "d_model"))
        w = self.head_projection(0)[0]
        self.heads_width = int(w.shape[1])            # heads * head_dim (input of out_proj)
        if self.heads_width % self.n_heads:
            raise OptionError(f"{self.model_type}: output projection input {self.heads_width} is not a "
                              f"multiple of {self.n_heads} heads")
        self.head_dim = self.heads_width // self.n_heads
        ctx = _cfg(config, "max_position_embeddings", "n_positions", "seq_length")
        self.context_length = int(ctx) if ctx else None
        self.softcap = _cfg(config, "final_logit_softcapping")
        params = inspect.signature(model.forward).parameters
        self.accepts_position_ids = "position_ids" in params
        if self.spec.float32_softmax:
            for i in range(self.n_layers):
                self.attn(i).register_forward_pre_hook(_mask_within_float32, with_kwargs=True)

    # --- modules -----------------------------------------------------------------------------
    def attn(self, i: int) -> torch.nn.Module:
        return _get(self.layers[i], self.spec.attn)

    def out_proj(self, i: int) -> torch.nn.Module:
        return _get(self.layers[i], self.spec.out_proj)

    def final_module(self) -> torch.nn.Module:
        """The module whose output the unembedding reads (final norm, or OPT's project_out)."""
        if self.spec.post_norm:
            try:
                m = _get(self.model, self.spec.post_norm)
            except AttributeError:
                m = None
            if m is not None:
                return m
        return _get(self.model, self.spec.final_norm)

    def final_norm(self) -> torch.nn.Module:
        return _get(self.model, self.spec.final_norm)

    def unembedding(self) -> torch.nn.Module:
        head = self.model.get_output_embeddings()
        return head if head is not None else _get(self.model, self.spec.unembed)

    def embedding(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    # --- maths -------------------------------------------------------------------------------
    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of already-final-normed vectors x [..., D] (softcapping applied where the model has it)."""
        head = self.unembedding()
        logits = head(x.to(head.weight.dtype))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def head_projection(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W [d_out, heads*head_dim], bias [d_out] | None) of block i's output projection."""
        proj = self.out_proj(i)
        w = proj.weight
        if self.spec.conv1d:
            w = w.t()
        return w, getattr(proj, "bias", None)

    @staticmethod
    def hidden_of(output):
        """The hidden-state tensor of a module's output (tensor, or first element of a tuple)."""
        if isinstance(output, torch.Tensor):
            return output
        return output[0]
