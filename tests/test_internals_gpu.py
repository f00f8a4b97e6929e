"""The extraction and steering paths on a CUDA device (automatic kernel backend: triton/cupy):
results equal the CPU torch-backend run of the same tiny models, the streaming pass never
synchronises with the host, and the CUDA kernels are the ones recorded.  Also runs as a script
(``python tests/test_internals_gpu.py``) on a machine with a GPU."""
import numpy as np
import pytest
import torch

from cape_hpc.internals import extract_internals, extract_internals_pooled, load_prompts
from cape_hpc.models import load_model
from cape_hpc.models.batching import tokenize
from cape_hpc.steering import Steering, greedy_generate

ARCHS = ["llama", "gemma3_text", "gpt2", "bloom", "qwen3", "falcon"]


def _on(arch, device):
    lm = load_model(f"tiny-{arch}")
    lm.model.to(device)
    return lm


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_extraction_matches_cpu(arch):
    """Left-padded batches on the GPU (kernels' automatic CUDA backend) equal the unbatched CPU run
    with the torch reference backend.  (Not compared: one unpadded prompt per forward on CUDA with
    sdpa attention -- with transformers 5.17 on an H100 that path ignored tiny-gemma3_text's
    sliding window for some prompts, while eager attention and every padded batch agreed.)"""
    ps = load_prompts().subset(24)
    cpu1 = extract_internals_pooled(_on(arch, "cpu"), ps, batch_size=1, backend="torch")
    gpu_lm = _on(arch, "cuda")
    gpu = extract_internals_pooled(gpu_lm, ps, batch_size=8)
    gpu_t = extract_internals_pooled(gpu_lm, ps, batch_size=5, backend="torch")
    assert gpu[0].backend in ("triton", "cupy")
    for (a, pa), (b, pb) in ((gpu, cpu1), (gpu_t, cpu1)):
        x, y = pa.residual.numpy(), pb.residual.numpy()
        np.testing.assert_allclose(x, y, atol=1e-4 * max(1.0, np.abs(y).max()), rtol=0)
        np.testing.assert_allclose(a.layer_coupling, b.layer_coupling, atol=1e-4)
        np.testing.assert_allclose(a.head_coupling, b.head_coupling, atol=1e-4)
        np.testing.assert_allclose(a.d_rep, b.d_rep, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cuda_pass_has_no_host_synchronisation_and_runs_the_cuda_kernels(arch):
    """torch.cuda.set_sync_debug_mode("error") around the forward passes (the trace callbacks
    updating the device state, exact pair count and reservoir); the backend recorded is a CUDA one
    and the numbers equal the CPU run."""
    from cape_hpc.models.tracing import sync_debug

    lm = _on(arch, "cuda")
    ps = load_prompts().subset(24)
    with sync_debug("error"):
        gpu = extract_internals(lm, ps, batch_size=5, block_resamples=50)
        res = extract_internals(lm, ps, batch_size=5, block_resamples=0, pair_budget_mb=0.001)
    assert gpu.backend in ("triton", "cupy"), gpu.backend
    assert res.pairs_mode == "reservoir"
    cpu = extract_internals(_on(arch, "cpu"), ps, batch_size=5, block_resamples=50, backend="torch")
    np.testing.assert_allclose(gpu.layer_coupling, cpu.layer_coupling, atol=1e-4)
    np.testing.assert_allclose(gpu.layer_pairwise_mean, cpu.layer_pairwise_mean, atol=1e-4)
    np.testing.assert_allclose(gpu.layer_competing_fraction, cpu.layer_competing_fraction, atol=1e-12)
    np.testing.assert_allclose(gpu.d_rep, cpu.d_rep, rtol=1e-3)
    np.testing.assert_allclose(gpu.head_coupling, cpu.head_coupling, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_steered_generation(arch):
    lm = _on(arch, "cuda")
    ids, _ = tokenize(lm, ["Is glass a liquid?", "ok", "Why do cats purr at night?"])
    v = torch.randn(lm.adapter.d_model, generator=torch.Generator().manual_seed(1)).cuda()

    def gen(rows, alpha):
        return greedy_generate(lm, rows, 6, Steering(1, v, alpha), stop_at_eos=False)

    assert gen(ids, 0.0) == greedy_generate(lm, ids, 6, stop_at_eos=False)
    assert gen(ids, 2.0) == [gen([r], 2.0)[0] for r in ids]


if __name__ == "__main__":
    import sys
    import traceback

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    bad = 0
    for fn, archs in ((test_cuda_extraction_matches_cpu, ARCHS),
                      (test_cuda_pass_has_no_host_synchronisation_and_runs_the_cuda_kernels, ["llama", "gpt2"]),
                      (test_cuda_steered_generation, ARCHS)):
        for arch in archs:
            try:
                fn(arch)
                print("ok  ", fn.__name__, arch, flush=True)
            except Exception:
                bad += 1
                print("FAIL", fn.__name__, arch, flush=True)
                traceback.print_exc()
    sys.exit(1 if bad else 0)
