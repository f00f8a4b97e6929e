"""Streaming extraction of model internals: per-layer / per-head couplings, projection bottleneck, d_rep."""
from cape_hpc.internals.extract import TAPS, InternalsResult, extract_internals
from cape_hpc.internals.prompts import Prompt, PromptSet, from_texts, load_prompts

__all__ = ["TAPS", "InternalsResult", "extract_internals", "Prompt", "PromptSet", "from_texts", "load_prompts"]
