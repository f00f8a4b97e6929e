"""The one direction function (cape_hpc.steering.directions.unit_direction) against float64 hand
computations: the mean difference, and the principal component of the paired differences taken
from the eigenvectors of their scatter matrix (not an SVD), oriented along the mean difference."""
import numpy as np
import pytest

from cape_hpc.errors import DataError, OptionError
from cape_hpc.steering.directions import unit_direction
from cape_hpc.steering.evaluate import item_directions


def _states(seed=0, n_true=7, n_false=5, d=6):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=d)
    return rng.normal(size=(n_true, d)) + axis, rng.normal(size=(n_false, d)) - axis


def _top_eigenvector(P):
    P = P - P.mean(0)
    lam, V = np.linalg.eigh(P.T @ P)
    return V[:, np.argmax(lam)]


def test_mean_difference_is_the_normalised_difference_of_means():
    T, F = _states()
    d = T.sum(0) / len(T) - F.sum(0) / len(F)
    np.testing.assert_allclose(unit_direction(T, F), d / np.sqrt(d @ d), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_is_the_top_eigenvector_of_the_paired_differences_oriented_along_the_mean_difference(seed):
    T, F = _states(seed)
    n = min(len(T), len(F))
    e = _top_eigenvector(T[:n] - F[:n])
    d = T.mean(0) - F.mean(0)
    want = e if e @ d >= 0 else -e
    got = unit_direction(T, F, "pca")
    np.testing.assert_allclose(got, want, atol=1e-10)
    assert got @ d > 0
    # explicit pairs are used as given
    P = np.random.default_rng(seed + 10).normal(size=(9, T.shape[1]))
    e = _top_eigenvector(P)
    np.testing.assert_allclose(unit_direction(T, F, "pca", paired_differences=P), e if e @ d >= 0 else -e,
                               atol=1e-10)


def test_item_directions_pairs_are_per_item_mean_differences():
    """The held-out evaluation's direction: only the training items' rows, pairs = mean of an
    item's true rows - mean of its false rows."""
    rng = np.random.default_rng(3)
    row_item = np.repeat(np.arange(6), 3)                  # 6 items x 3 answers
    is_true = np.tile([True, False, False], 6)
    X = rng.normal(size=(18, 5)) + np.where(is_true, 1.0, -1.0)[:, None] * rng.normal(size=5)
    train = np.array([True, True, False, True, True, False])
    keep = train[row_item]
    d = X[keep & is_true].mean(0) - X[keep & ~is_true].mean(0)
    np.testing.assert_allclose(item_directions(X, is_true, row_item, train), d / np.linalg.norm(d), atol=1e-12)
    P = np.stack([X[(row_item == i) & is_true].mean(0) - X[(row_item == i) & ~is_true].mean(0)
                  for i in np.flatnonzero(train)])
    e = _top_eigenvector(P)
    np.testing.assert_allclose(item_directions(X, is_true, row_item, train, "pca"), e if e @ d >= 0 else -e,
                               atol=1e-10)


def test_bad_input_is_one_clear_error():
    T, F = _states()
    with pytest.raises(DataError, match="cal.jsonl: needs true and false"):
        unit_direction(T, F[:0], where="cal.jsonl")
    with pytest.raises(DataError, match="same mean state"):
        unit_direction(T, T)
    with pytest.raises(OptionError, match="--direction"):
        unit_direction(T, F, "lda")
