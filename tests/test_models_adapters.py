"""Every architecture adapter on its tiny random model (built from the transformers config):
left-padded batches equal unbatched runs, per-head outputs through the output projection
reproduce the attention block's output, and an unknown architecture lists the supported ones."""
import numpy as np
import pytest
import torch

from cape_hpc.errors import OptionError
from cape_hpc.internals import extract_internals_pooled
from cape_hpc.internals.prompts import Prompt, PromptSet
from cape_hpc.models.batching import forward_kwargs, left_pad
from cape_hpc.models import SUPPORTED_ARCHITECTURES, TINY_ARCHS, Adapter, load_model

ARCHS = sorted(TINY_ARCHS)
# lengths differ a lot so that left padding is exercised
TEXTS = ["Why is the sky blue?", "2+2=", "All cats are mammals; is every cat an animal? Explain step by step.",
         "Is glass a liquid?", "Vikings and horned helmets: true or false, and where does the idea come from?",
         "Ok."]


def _prompts():
    ps = [Prompt(id=str(i), text=t, set="reasoning" if i % 2 == 0 else "truthfulness") for i, t in enumerate(TEXTS)]
    return PromptSet(ps, path="<test>", sha256="0" * 64)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    return load_model(f"tiny-{request.param}")


def test_every_paper_family_has_a_tiny_model():
    wanted = {"gpt_neox", "opt", "bloom", "gpt_neo", "gptj", "gpt2", "falcon", "llama", "mistral", "phi",
              "qwen2", "qwen3", "gemma", "gemma3_text"}
    assert wanted <= set(TINY_ARCHS)
    assert {"olmo", "olmo2"} & set(TINY_ARCHS)
    assert set(TINY_ARCHS) <= set(SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_batched_left_padded_equals_unbatched(tiny, pooling):
    ps = _prompts()
    a, pa = extract_internals_pooled(tiny, ps, batch_size=len(TEXTS), pooling=pooling, backend="torch")
    b, pb = extract_internals_pooled(tiny, ps, batch_size=1, pooling=pooling, backend="torch")
    for key in ("residual", "final"):
        x, y = getattr(pa, key).numpy(), getattr(pb, key).numpy()
        scale = np.abs(y).max()
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5 * max(scale, 1.0), err_msg=key)
    np.testing.assert_allclose(pa.head_sums.numpy(), pb.head_sums.numpy(), rtol=0,
                               atol=2e-5 * max(np.abs(pb.head_sums.numpy()).max(), 1.0))
    np.testing.assert_allclose(a.layer_coupling, b.layer_coupling, atol=1e-5)


def test_batched_equals_a_plain_single_prompt_forward(tiny):
    """The pooled last-token residual of a padded batch equals the hidden state of a plain,
    unpadded forward of that prompt alone (no cape code in the reference path)."""
    ps = _prompts()
    res, pooled = extract_internals_pooled(tiny, ps, batch_size=len(TEXTS), pooling="last", backend="torch")
    tok, model, L = tiny.tokenizer, tiny.model, tiny.adapter.n_layers
    for row, idx in enumerate(pooled.order[:3]):
        ids = tok(TEXTS[idx], return_tensors="pt")
        with torch.no_grad():
            out = model(**ids, output_hidden_states=True)
        for l in range(L - 1):
            ref = out.hidden_states[l + 1][0, -1].numpy()
            np.testing.assert_allclose(pooled.residual[l, row].numpy(), ref,
                                       atol=2e-5 * max(1.0, np.abs(ref).max()), rtol=0)


def test_heads_through_output_projection_reproduce_attention_output(tiny):
    ad = tiny.adapter
    H, dh = ad.n_heads, ad.head_dim
    captured = {}

    def pre(module, args):
        captured["x"] = args[0].detach().clone()

    def post(module, args, kwargs, output):
        captured["out"] = ad.hidden_of(output).detach().clone()
        captured["residual"] = kwargs.get("residual", args[1] if len(args) > 1 else None)

    layer = ad.n_layers - 1
    h1 = ad.out_proj(layer).register_forward_pre_hook(pre)
    h2 = ad.attn(layer).register_forward_hook(post, with_kwargs=True)
    try:
        ids, mask, pos = left_pad([tiny.tokenizer(t)["input_ids"] for t in TEXTS[:3]], 0)
        with torch.no_grad():
            tiny.model(**forward_kwargs(tiny, ids, mask, pos))
    finally:
        h1.remove()
        h2.remove()
    x = captured["x"].to(torch.float64)                       # [N, S, H*dh]
    assert x.shape[-1] == H * dh
    heads = x.reshape(*x.shape[:2], H, dh)                    # per-head outputs
    W, b = ad.head_projection(layer)
    W = W.detach().to(torch.float64)
    total = sum(heads[:, :, h] @ W[:, h * dh:(h + 1) * dh].T for h in range(H))
    if b is not None:
        total = total + b.detach().to(torch.float64)
    expected = captured["out"].to(torch.float64)
    if ad.spec.attn_adds_residual:
        expected = expected - captured["residual"].to(torch.float64)
    np.testing.assert_allclose(total.numpy(), expected.numpy(), atol=1e-5, rtol=0)


def test_unknown_architecture_lists_supported():
    model, _ = __import__("cape_hpc.models.tiny", fromlist=["build_tiny"]).build_tiny("llama")
    model.config.model_type = "mamba_like"
    with pytest.raises(OptionError) as ei:
        Adapter(model)
    msg = str(ei.value)
    assert "mamba_like" in msg and "llama" in msg and "gpt_neox" in msg and "gemma3_text" in msg


def test_unknown_tiny_alias_lists_tiny_models():
    with pytest.raises(OptionError, match="tiny-gpt2"):
        load_model("tiny-nonexistent")


def test_tiny_models_are_deterministic():
    a = load_model("tiny-qwen2").model.state_dict()
    b = load_model("tiny-qwen2").model.state_dict()
    c = load_model("tiny-qwen2", revision="1").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", ARCHS)
def test_float64_left_padded_logits_equal_each_prompt_alone(arch):
    """In float64 a left-padded batch's logits at the real positions equal a plain unpadded forward
    of each prompt alone.  BLOOM's eager attention takes its softmax in float32, where float64's
    mask minimum is -inf: its padding rows turned NaN and leaked into the real rows until the
    adapter clamped the mask (``adapters._mask_within_float32``).  Mixtral's experts run eagerly in
    float64 (``loading._experts_for_dtype``); GPT-Neo computes its attention scores in float32 by
    design, hence its float32-sized tolerance."""
    lm = load_model(f"tiny-{arch}", dtype="float64")
    tol = 1e-6 if arch == "gpt_neo" else 1e-9
    rows = [lm.tokenizer(t)["input_ids"] for t in TEXTS[:4]]
    ids, mask, pos = left_pad(rows, pad_id=0)
    with torch.inference_mode():
        batched = lm.model(**forward_kwargs(lm, ids, mask, pos)).logits
        for i, r in enumerate(rows):
            alone = lm.model(input_ids=torch.tensor([r])).logits[0]
            np.testing.assert_allclose(batched[i, ids.shape[1] - len(r):].numpy(), alone.numpy(),
                                       rtol=0, atol=tol * max(alone.abs().max().item(), 1.0), err_msg=arch)
