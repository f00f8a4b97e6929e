"""The ``torch`` backend: the plain-torch functions of ``reference``, on whatever device the tensors live.

Steering here is the plain, unfused torch sequence (norms, cosine, update, copy back); the other
backends fuse it into one pass over h.
"""
from __future__ import annotations

import torch

from cape_kernels import reference as ref


def pooled_tap(hidden, mask, mode):
    return ref.pooled_tap(hidden, mask, mode)


def set_mean_cosine(R, T):
    return ref.set_mean_cosine(R, T)


def pairwise(R, T, threshold, return_full):
    return ref.pairwise(R, T, threshold, return_full)


def steer_(h, v, alpha, relative, tau):
    new, proj = ref.steer(h, v, alpha, relative, tau)
    h.copy_(new)
    return proj


__all__ = ["pooled_tap", "set_mean_cosine", "pairwise", "steer_", "torch"]
