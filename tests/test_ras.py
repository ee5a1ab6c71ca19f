"""Reciprocal activation shifts, RAS, its ablations and the KL baseline against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

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
    metrics = shift_metrics(
        np.array([1.0, 1.0]), np.array([0.5, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 4.0]), settings
    )
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
    assert float(coarse_kl(_logp(p[:3]), _logp(q[:3]))) == pytest.approx(
        0.1 * math.log(0.1 / 0.19) + 0.1 * math.log(0.1 / 0.01)
    )


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


def test_correlation_table_per_seed_and_pooled_with_the_base_once():
    import pandas as pd

    from rim.ras import correlation_table

    rows = []
    misalignment = {0: 0.1, 1: 0.2, 2: 0.4, 3: 0.5}
    for seed in (0, 1):
        for step in (0, 1, 2, 3):
            checkpoint = "base" if step == 0 else f"run/seed{seed}/step{step}"
            value = 0.0 if step == 0 else step + (0.5 if seed else 0.0)
            rows.append(
                {
                    "model": "m",
                    "run": "run",
                    "seed": seed,
                    "step": step,
                    "checkpoint": checkpoint,
                    "neuron_set": "safety",
                    "draw": None,
                    "metric": "ras_harmonic",
                    "value": value,
                    "misalignment_rate": misalignment[step] + (0.05 * seed if step else 0.0),
                }
            )
    table = pd.DataFrame(rows)
    result = correlation_table(table, methods=("pearson",), n_boot=100)
    per_seed = result[result["scope"] == "seed"].set_index("seed")
    for seed in (0, 1):
        part = table[table["seed"] == seed]
        assert per_seed.loc[seed, "r"] == pytest.approx(np.corrcoef(part["value"], part["misalignment_rate"])[0, 1])
        assert per_seed.loc[seed, "n_checkpoints"] == 4
    pooled = result[result["scope"] == "pooled"].iloc[0]
    once = table.drop_duplicates("checkpoint")
    assert pooled["n_checkpoints"] == 7
    assert pooled["r"] == pytest.approx(np.corrcoef(once["value"], once["misalignment_rate"])[0, 1])
    assert pd.isna(pooled["seed"]) and pooled["against"] == "misalignment_rate"


def test_partial_correlation_removes_what_the_step_explains():
    from rim.stats import partial_correlation

    # x and y both grow with the step and share nothing else: r is high, the partial r is ~0.
    rng = np.random.default_rng(3)
    step = np.repeat(np.arange(8.0), 3)
    x = 2 * step + rng.normal(0, 1, step.size)
    y = -step + rng.normal(0, 1, step.size)
    assert abs(np.corrcoef(x, y)[0, 1]) > 0.8
    result = partial_correlation(x, y, step, n_boot=200)
    # The oracle: Pearson r of the residuals of straight-line fits on the step.
    residual = lambda v: v - np.polyval(np.polyfit(step, v, 1), step)  # noqa: E731
    expected = np.corrcoef(residual(x), residual(y))[0, 1]
    assert result.r == pytest.approx(expected) and abs(result.r) < 0.5
    # p from t on n - 3 degrees of freedom; the interval holds the estimate.
    dof = step.size - 3
    t = expected * np.sqrt(dof / (1 - expected**2))
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert result.ci_low <= result.r <= result.ci_high and result.n == step.size
    # A shared cause beyond the step survives: y follows x's noise too.
    y_linked = y + (x - 2 * step)
    assert partial_correlation(x, y_linked, step, n_boot=50).r > 0.6
    # Spearman: the same on ranks.
    ranked = partial_correlation(x, y_linked, step, "spearman", n_boot=50)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y_linked, step))
    residual_rank = lambda v: v - np.polyval(np.polyfit(rz, v, 1), rz)  # noqa: E731
    assert ranked.r == pytest.approx(np.corrcoef(residual_rank(rx), residual_rank(ry))[0, 1])


def test_mean_correlation_over_seeds_has_a_t_interval():
    from rim.stats import mean_correlation

    rs = [0.9, 0.5, 0.7]
    result = mean_correlation(rs)
    half = stats.t.ppf(0.975, 2) * np.std(rs, ddof=1) / np.sqrt(3)
    assert result.r == pytest.approx(0.7) and result.n == 3
    assert (result.ci_low, result.ci_high) == pytest.approx((0.7 - half, min(1.0, 0.7 + half)))
    assert result.p_value == pytest.approx(stats.ttest_1samp(rs, 0).pvalue)
    # Seeds that disagree in sign: the interval spans 0.
    spread = mean_correlation([0.8, -0.6, 0.1])
    assert spread.ci_low < 0 < spread.ci_high and spread.p_value > 0.5
    one = mean_correlation([0.4, float("nan")])
    assert one.r == pytest.approx(0.4) and one.n == 1 and np.isnan(one.ci_low)


def test_correlation_table_scopes_without_base_partial_and_over_seeds():
    import pandas as pd

    from rim.ras import CORRELATION_SCOPES, correlation_table
    from rim.stats import partial_correlation

    rows = []
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        for step in range(0, 5):
            checkpoint = "base" if step == 0 else f"run/seed{seed}/step{step}"
            value = 0.0 if step == 0 else step * (1 + 0.3 * seed) + rng.normal(0, 0.5)
            mis = 0.1 if step == 0 else 0.1 + 0.05 * step + rng.normal(0, 0.03)
            rows.append(
                {
                    "model": "m",
                    "run": "run",
                    "seed": seed,
                    "step": step,
                    "checkpoint": checkpoint,
                    "neuron_set": "safety",
                    "draw": None,
                    "metric": "ras_harmonic",
                    "value": value,
                    "misalignment_rate": mis,
                }
            )
    table = pd.DataFrame(rows)
    result = correlation_table(table, methods=("pearson",), n_boot=100)
    assert set(result["scope"]) == set(CORRELATION_SCOPES)
    scope = result.set_index("scope")
    once = table.drop_duplicates("checkpoint")
    trained = once[once["checkpoint"] != "base"]
    without = scope.loc["pooled_without_base"]
    assert without["n_checkpoints"] == 12 and without["n_seeds"] == 3
    assert without["r"] == pytest.approx(np.corrcoef(trained["value"], trained["misalignment_rate"])[0, 1])
    partial = scope.loc["partial_step"]
    assert partial["n_checkpoints"] == 13
    assert partial["r"] == pytest.approx(partial_correlation(once["value"], once["misalignment_rate"], once["step"]).r)
    per_seed = result[result["scope"] == "seed"]["r"].to_numpy()
    mean = scope.loc["seed_mean"]
    assert mean["r"] == pytest.approx(per_seed.mean()) and mean["n_seeds"] == 3 and mean["n_checkpoints"] == 13
    assert mean["p_value"] == pytest.approx(stats.ttest_1samp(per_seed, 0).pvalue)


# ----- the stage in the workflow, on a tiny random model --------------------------------------------
import subprocess  # noqa: E402
import sys  # noqa: E402

import pandas as pd  # noqa: E402

from workflow_helpers import REPO, clone_workdir, planned_jobs, snakemake, tiny_config, write_config  # noqa: E402

# Both modules clone the session fixture ras_pipeline: under pytest -n they share one worker
# (--dist loadgroup), so that it is built once.
pytestmark = pytest.mark.xdist_group("ras_pipeline")

RAS_TARGET = "results/ras.parquet"


def ras_config(model_dir, **changes):
    # One seed of the RAS run (the pooled scope is tested on a hand-made table), checkpoints at
    # steps 0 (the base model), 2 and 4.
    config = tiny_config(model_dir, training={"runs": {"gsm8k_style": {"seeds": [0]}}})
    for block, values in changes.items():
        config[block] = {**config[block], **values}
    return config


@pytest.fixture(scope="module")
def ras_workdir(ras_pipeline, tmp_path_factory):
    template, config = ras_pipeline
    assert config == ras_config(config["models"]["tiny"]["source"])  # the shared build is ours
    return clone_workdir(template, tmp_path_factory.mktemp("ras-workflow") / "workdir")


def test_ras_table_from_scratch(ras_workdir):
    table = pd.read_parquet(ras_workdir / RAS_TARGET)
    assert set(table["neuron_set"]) == {"safety", "random", "all", "none"}
    assert set(table["metric"]) == {"ras_harmonic", "ras_arithmetic", "ras_geometric", "delta_safe", "delta_math", "kl"}
    assert sorted(table["seed"].unique()) == [0] and sorted(table["step"].unique()) == [0, 2, 4]
    # Per checkpoint and variant of the inputs: 5 metrics for safety, each of the 2 random draws
    # and all neurons, plus KL.
    assert set(table["inputs"]) == {"own_response", "base_response", "prompt_only"}
    assert table.groupby(["seed", "step", "inputs"]).size().eq(4 * 5 + 1).all()
    assert set(table["tokens"]) == {"user_and_response"} and set(table["kl_positions"]) == {"answer"}
    base = table[table["step"] == 0]
    assert (base["value"].abs() < 1e-6).all()  # the base model against itself
    tuned = table[(table["step"] == 4) & (table["metric"] == "kl")]
    assert (tuned["value"] > 0).all() and tuned["value"].nunique() == 1  # the same KL in every variant
    # Without the responses the shifts differ (the tiny models write the same blank lines before
    # and after fine-tuning, so own and base responses are the same tokens here; the
    # teacher-forced reading is checked in tests/test_activations.py).
    shifts = table[(table["step"] == 4) & (table["neuron_set"] == "all") & (table["metric"] == "delta_math")]
    shifts = shifts.set_index("inputs")["value"]
    assert shifts["prompt_only"] != shifts["own_response"]
    assert table["misalignment_rate"].between(0, 1).all() and table["math_accuracy"].between(0, 1).all()
    assert set(table["normalization"]) == {"group"} and set(table["activation_handling"]) == {"exclude"}
    sizes = table[table["neuron_set"].isin(["safety", "random"])].groupby("neuron_set")["set_size"].unique()
    assert list(sizes["safety"]) == list(sizes["random"])

    correlations = pd.read_parquet(ras_workdir / "results/ras_correlations.parquet")
    assert set(correlations["scope"]) == {"seed", "pooled", "pooled_without_base", "partial_step", "seed_mean"}
    assert set(correlations["method"]) == {"pearson", "spearman"}
    n_checkpoints = correlations.groupby("scope")["n_checkpoints"].unique()
    assert list(n_checkpoints["pooled"]) == [3] and list(n_checkpoints["pooled_without_base"]) == [2]
    n_seeds = correlations.groupby("scope")["n_seeds"].unique()
    assert list(n_seeds["pooled"]) == [1]
    assert set(n_seeds["seed_mean"]) <= {0, 1}  # seeds whose r is defined (0 where a side is constant)
    # variants x scopes x methods x (neuron sets x metrics + KL)
    assert len(correlations) == 3 * 5 * 2 * (4 * 5 + 1)


def test_dumps_and_neuron_sets(ras_workdir):
    from rim.activations import input_set_names

    from rim.activations import read_input_set

    assert sorted(input_set_names(ras_workdir / "results/activations/tiny/base.h5")) == [
        "gsm8k_heldout/no_think",
        "gsm8k_heldout/no_think@base_responses",
        "harmful/no_think",
        "harmful/no_think@base_responses",
        "harmful_mi/no_think",
    ]
    step4 = ras_workdir / "results/activations/tiny/gsm8k_style/seed0/step4.h5"
    assert sorted(input_set_names(step4)) == [
        "gsm8k_heldout/no_think",
        "gsm8k_heldout/no_think@base_responses",
        "harmful/no_think",
        "harmful/no_think@base_responses",
    ]
    # The fixed-token sets of the checkpoint read exactly the base model's tokens (its responses).
    base_tokens = read_input_set(ras_workdir / "results/activations/tiny/base.h5", "harmful", "no_think", neurons=False)
    fixed = read_input_set(step4, "harmful", "no_think", neurons=False, responses="base")
    assert fixed.attrs["response_source"] == "results/responses/tiny/base/harmful/no_think.parquet"
    assert fixed.prompt_ids == base_tokens.prompt_ids  # same lengths, so the same longest-first order
    sets = pd.read_parquet(ras_workdir / "results/neurons/tiny/neuron_sets.parquet")
    safety = set(zip(*[sets.loc[sets["neuron_set"] == "safety", c] for c in ("layer", "neuron")]))
    assert safety and (sets.loc[sets["neuron_set"] == "safety", "selection_frequency"] >= 0.5).all()
    for draw in (0, 1):
        part = sets[(sets["neuron_set"] == "random") & (sets["draw"] == draw)]
        assert len(part) == len(safety) and not safety & set(zip(part["layer"], part["neuron"]))


def test_nothing_reruns_and_edits_rerun_only_what_they_affect(ras_workdir, tiny_model_dirs):
    assert planned_jobs(snakemake(ras_workdir, "-n", RAS_TARGET)) == {}
    model = tiny_model_dirs["llama"]
    cases = [
        # RAS settings: the RAS table and its correlations only.
        ({"ras": {"normalization": "qualifying"}}, {"ras": 1, "ras_table": 1}),
        # The selection of the safety neurons: from the selection on, no dump again.
        ({"neurons": {"min_fraction": 0.75}}, {"safety_neurons": 1, "ras": 1, "ras_table": 1}),
        # The zeroing test is not part of the RAS target.
        ({"neurons": {"zeroing": {"random_draws": 2}}}, {}),
        # How activations are stored: every checkpoint's job (responses and dump, one model load),
        # the judging of its responses, nothing upstream.
        (
            {"activations": {"kl_top_k": 8}},
            {
                "generate_and_dump_base": 1,
                "generate_and_dump": 2,
                "judge": 9,
                "safety_neurons": 1,
                "ras": 1,
                "ras_table": 1,
            },
        ),
    ]
    try:
        for changes, expected in cases:
            write_config(ras_workdir, ras_config(model, **changes))
            assert planned_jobs(snakemake(ras_workdir, "-n", RAS_TARGET)) == expected, changes
    finally:
        write_config(ras_workdir, ras_config(model))


def test_bad_neuron_settings_stop_at_start_naming_the_key(tiny_model_dirs, tmp_path):
    write_config(
        tmp_path,
        ras_config(tiny_model_dirs["llama"], ras={"math_inputs": {"prompt_set": "harmful", "mode": "no_think"}}),
    )
    result = snakemake(tmp_path, "-n", RAS_TARGET, check=False)
    assert result.returncode != 0
    assert "ras.math_inputs.prompt_set" in result.stdout + result.stderr


@pytest.mark.parametrize("script", ["safety_neurons.py", "ras_table.py"])
def test_step_scripts_run_standalone(script):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "scripts"), "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0 and "--output" in done.stdout
