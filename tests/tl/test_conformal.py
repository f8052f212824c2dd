"""Split-conformal calibration (``sthinge.tl._conformal``): arrays only, a known noise model."""

import numpy as np
import pytest

from sthinge.tl._conformal import LEVEL_GRID, Calibration, conformal_calibration


def _draw(rng, n, sd_true, scale_error):
    """Truth ~ N(mean, sd_true^2) per gene; the model reports `scale_error * sd_true` as its std."""
    mean = rng.normal(3.0, 0.5, size=(n, sd_true.size))
    truth = mean + rng.normal(size=mean.shape) * sd_true
    return truth, mean, np.broadcast_to(scale_error * sd_true, mean.shape)


@pytest.mark.parametrize("scale_error", [0.1, 1.0, 5.0])
def test_calibrated_intervals_reach_their_level_whatever_the_reported_scale(scale_error):
    rng = np.random.default_rng(0)
    sd_true = rng.uniform(0.2, 1.0, size=20)
    cal = conformal_calibration(*_draw(rng, 2000, sd_true, scale_error))
    truth, mean, std = _draw(rng, 20000, sd_true, scale_error)
    for level in (0.5, 0.8, 0.9, 0.95):
        lo, hi = cal.interval(mean, std, level)
        cover = ((truth >= lo) & (truth <= hi)).mean(0)
        assert np.abs(cover - level).max() < 0.03, (level, cover)
        # an uncalibrated Gaussian interval with the wrong scale misses by far (the test can fail)
    naive = (np.abs(truth - mean) <= 1.645 * std).mean()
    assert scale_error == 1.0 or abs(naive - 0.9) > 0.09


def test_multiplier_interpolates_and_refuses_levels_outside_the_grid():
    rng = np.random.default_rng(1)
    cal = conformal_calibration(*_draw(rng, 500, np.full(3, 0.5), 1.0))
    mid = cal.multiplier(0.9025)
    np.testing.assert_allclose(mid, 0.5 * (cal.multiplier(0.9) + cal.multiplier(0.905)))
    assert np.all(np.diff(cal.scale, axis=0) >= 0)  # wider at higher levels
    with pytest.raises(ValueError, match="covers levels"):
        cal.multiplier(0.999)


def test_lower_bound_is_never_negative():
    rng = np.random.default_rng(2)
    truth, mean, std = _draw(rng, 300, np.full(4, 2.0), 1.0)
    cal = conformal_calibration(np.abs(truth), mean * 0, std)
    lo, _ = cal.interval(mean * 0, std, 0.9)
    assert lo.min() >= 0.0


def test_round_trip_through_a_dict_and_bad_dicts():
    rng = np.random.default_rng(3)
    cal = conformal_calibration(*_draw(rng, 100, np.full(5, 0.3), 1.0), info={"source": "validation"})
    again = Calibration.from_dict(cal.to_dict(), n_genes=5)
    np.testing.assert_array_equal(again.scale, np.asarray(cal.scale, np.float32))
    np.testing.assert_array_equal(again.levels, np.asarray(LEVEL_GRID))
    assert again.n == 100 and again.info == {"source": "validation", "too_few_spots_above": 0.995}
    d = cal.to_dict()
    with pytest.raises(ValueError, match="shape"):
        Calibration.from_dict(d, n_genes=6)
    with pytest.raises(ValueError, match="'delta'"):
        Calibration.from_dict({**d, "delta": [0.0] * 5}, n_genes=5)
    with pytest.raises(ValueError, match="'n'"):
        Calibration.from_dict({**d, "n": 0}, n_genes=5)
    with pytest.raises(ValueError, match="expected a dict"):
        Calibration.from_dict([1, 2], n_genes=5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="one shape"):
        conformal_calibration(np.zeros((5, 2)), np.zeros((5, 3)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="at least 2 spots"):
        conformal_calibration(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        conformal_calibration(np.full((3, 2), np.nan), np.zeros((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="negative"):
        conformal_calibration(np.zeros((3, 2)), np.zeros((3, 2)), -np.ones((3, 2)))
