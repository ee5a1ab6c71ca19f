"""Reciprocal activation shifts, RAS, its ablations and the KL baseline against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rim.errors import ConfigError
from rim.ras import ShiftSettings, coarse_kl, delta_math, delta_safe, harmonic_mean, mean_activation, shift_metrics

# Six neurons: two ordinary ones that fall / rise, one that halves, and three that are
# negative or zero at one of the checkpoints (the cases the handling options decide).
A0 = np.array([2.0, 1.0, 0.5, -1.0, 0.5, 0.0])
AT = np.array([1.0, 2.0, 0.25, -2.0, -1.0, 0.5])
EPS = 0.01

# Hand computations, per handling option: (sum of safe terms, qualifying neurons,
#                                            sum of math terms, qualifying neurons).
# exclude : safe j0 1/1-1/2=0.5, j2 1/0.25-1/0.5=2;            math j1 1/1-1/2=0.5
# clip    : as exclude, plus safe j4 (0.5 -> eps) 100-2=98;    math j5 (eps -> 0.5) 100-2=98
# absolute: safe j0, j2;  math j1 0.5, j3 (|-1| -> |-2|) 0.5, j4 (0.5 -> 1) 1, j5 (eps -> 0.5) 98
EXPECTED = {
    "exclude": (2.5, 2, 0.5, 1),
    "clip": (100.5, 3, 98.5, 2),
    "absolute": (2.5, 2, 100.0, 4),
}


@pytest.mark.parametrize("handling", ["exclude", "clip", "absolute"])
@pytest.mark.parametrize("normalization", ["group", "qualifying"])
def test_deltas_by_hand(handling, normalization):
    settings = ShiftSettings(normalization=normalization, handling=handling, epsilon=EPS)
    safe_sum, safe_n, math_sum, math_n = EXPECTED[handling]
    expected_safe = safe_sum / (6 if normalization == "group" else safe_n)
    expected_math = math_sum / (6 if normalization == "group" else math_n)
    assert delta_safe(A0, AT, settings) == pytest.approx(expected_safe, rel=1e-12)
    assert delta_math(A0, AT, settings) == pytest.approx(expected_math, rel=1e-12)


def test_ras_and_ablations_by_hand():
    settings = ShiftSettings(normalization="group", handling="exclude", epsilon=EPS)
    metrics = shift_metrics(A0, AT, A0, AT, settings)
    ds, dm = 2.5 / 6, 0.5 / 6
    assert metrics["delta_safe"] == pytest.approx(ds)
    assert metrics["delta_math"] == pytest.approx(dm)
    assert metrics["ras_harmonic"] == pytest.approx(2 * ds * dm / (ds + dm))
    assert metrics["ras_harmonic"] == pytest.approx(0.1388888889)
    assert metrics["ras_arithmetic"] == pytest.approx(0.25)
    assert metrics["ras_geometric"] == pytest.approx(math.sqrt(ds * dm))


def test_safety_and_math_inputs_are_kept_apart():
    # Safety activations only fall, math activations only rise: each delta sees its own inputs.
    settings = ShiftSettings(epsilon=EPS)
    metrics = shift_metrics(np.array([1.0, 1.0]), np.array([0.5, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 4.0]), settings)
    assert metrics["delta_safe"] == pytest.approx((2 - 1) / 2)
    assert metrics["delta_math"] == pytest.approx((1 - 0.25) / 2)


def test_no_shift_gives_zero_everywhere():
    a = np.array([0.3, 1.2, -0.4, 0.0])
    for handling in ("exclude", "clip", "absolute"):
        for normalization in ("group", "qualifying"):
            metrics = shift_metrics(a, a, a, a, ShiftSettings(normalization, handling, EPS))
            assert all(value == 0 for value in metrics.values()), (handling, normalization, metrics)


def test_harmonic_mean_of_zero_deltas_is_zero_and_punishes_imbalance():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 1.0) == pytest.approx(1.0)
    assert harmonic_mean(9.0, 1.0) == pytest.approx(1.8)


def test_epsilon_bounds_a_clipped_term():
    # A neuron falling from 1 to exactly zero counts as 1/eps - 1 under clip, and not at all under exclude.
    a0, at = np.array([1.0]), np.array([0.0])
    assert delta_safe(a0, at, ShiftSettings(handling="clip", epsilon=0.1)) == pytest.approx(9.0)
    assert delta_safe(a0, at, ShiftSettings(handling="exclude", epsilon=0.1)) == 0.0


def test_bad_settings_name_the_config_key():
    with pytest.raises(ConfigError, match="ras.normalization"):
        ShiftSettings(normalization="per_neuron")
    with pytest.raises(ConfigError, match="ras.activation_handling"):
        ShiftSettings(handling="ignore")
    with pytest.raises(ConfigError, match="ras.epsilon"):
        ShiftSettings(epsilon=0)


def test_settings_from_config_block():
    settings = ShiftSettings.from_config({"normalization": "qualifying", "activation_handling": "clip", "epsilon": 0.5})
    assert settings.as_dict() == {"normalization": "qualifying", "handling": "clip", "epsilon": 0.5}


def test_mean_activation_averages_inputs_per_neuron():
    pooled = np.array([[[1.0, 2.0]], [[3.0, 6.0]]], dtype=np.float16)  # [inputs, layers, neurons]
    np.testing.assert_allclose(mean_activation(pooled), [[2.0, 4.0]])


def _logp(p):
    return np.log(np.asarray(p, dtype=np.float64))


def test_coarse_kl_equals_kl_when_the_tail_is_one_token_or_empty():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.3, 0.3])
    full = float((p * np.log(p / q)).sum())
    top2 = coarse_kl(_logp(p[:2]), _logp(q[:2]))
    top3 = coarse_kl(_logp(p), _logp(q))
    assert top2 == pytest.approx(full, rel=1e-9)
    assert top3 == pytest.approx(full, rel=1e-9)
    assert full == pytest.approx(0.5 * math.log(0.5 / 0.4) + 0.2 * math.log(0.2 / 0.3))


def test_coarse_kl_is_a_lower_bound_when_the_tail_hides_changes():
    p, q = np.array([0.5, 0.3, 0.1, 0.1]), np.array([0.5, 0.3, 0.19, 0.01])
    full = float((p * np.log(p / q)).sum())
    coarse = float(coarse_kl(_logp(p[:2]), _logp(q[:2])))
    assert coarse == pytest.approx(0.0, abs=1e-12)
    assert full > 0.1
    assert float(coarse_kl(_logp(p[:3]), _logp(q[:3]))) == pytest.approx(0.1 * math.log(0.1 / 0.19) + 0.1 * math.log(0.1 / 0.01))


def test_coarse_kl_per_position_shapes():
    base = _logp([[[0.6, 0.3], [0.9, 0.05]]])  # [1 example, 2 positions, k=2]
    same = coarse_kl(base, base)
    assert same.shape == (1, 2)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)


def test_vectorised_correlation_interval_equals_one_resample_at_a_time():
    # rim.stats.correlation bootstraps all resamples at once (a RAS table has hundreds of
    # correlations); it must give the interval of the plain loop over the same draws.
    from scipy import stats as scipy_stats

    from rim.stats import correlation

    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=9), 1)  # ties, as Spearman meets them
    y = x + rng.normal(size=9)
    for method, func in (("pearson", scipy_stats.pearsonr), ("spearman", scipy_stats.spearmanr)):
        draws = np.random.default_rng(0)
        boot = []
        for _ in range(200):
            index = draws.integers(0, 9, 9)
            if np.ptp(x[index]) > 0 and np.ptp(y[index]) > 0:
                boot.append(func(x[index], y[index])[0])
        low, high = np.quantile(boot, [0.025, 0.975])
        result = correlation(x, y, method, n_boot=200, seed=0)
        assert result.r == pytest.approx(func(x, y)[0])
        assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)


def test_neurons_without_a_value_never_count():
    a0, at = np.array([1.0, np.nan, 2.0]), np.array([0.5, 0.1, np.nan])
    for handling in ("exclude", "clip", "absolute"):
        settings = ShiftSettings("qualifying", handling, EPS)
        assert delta_safe(a0, at, settings) == pytest.approx(1.0)
    pooled = np.array([[[1.0, np.nan]], [[3.0, np.nan]], [[np.nan, np.nan]]])
    mean = mean_activation(pooled)
    assert mean[0, 0] == pytest.approx(2.0) and np.isnan(mean[0, 1])
