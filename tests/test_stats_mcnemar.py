"""The exact McNemar test (cape_hpc.stats.mcnemar) against scipy's exact binomial test."""
import pytest

from cape_hpc.stats.mcnemar import mcnemar_exact


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (0, 5), (7, 2), (2, 7), (10, 10), (1, 12), (40, 25), (0, 1),
                                 (150, 120)])
def test_mcnemar_exact_against_scipy_binomtest(b, c):
    from scipy.stats import binomtest

    ref = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-12)


def test_mcnemar_exact_is_symmetric_and_hand_values():
    # b + c = 4, min = 0: 2 * (1/16) = 0.125; min = 1: 2 * 5/16 = 0.625; min = 2: capped at 1
    assert mcnemar_exact(4, 0) == mcnemar_exact(0, 4) == pytest.approx(0.125)
    assert mcnemar_exact(3, 1) == pytest.approx(0.625)
    assert mcnemar_exact(2, 2) == 1.0
