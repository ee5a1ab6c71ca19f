"""Safety-neuron selection (top-m per pair, intersection, frequency) and random control sets."""

from __future__ import annotations

import numpy as np
import pytest

from rim.errors import ConfigError, DataError, RimError
from rim.neurons import flat_index, layer_neuron, pair_shifts, random_neuron_sets, safety_neurons, selection_frequency, top_m

# Three pairs, six neurons. Top 3 per pair: {0,1,2}, {1,2,3}, {0,2,4}.
SHIFTS = np.array(
    [
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        [0.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        [4.0, 0.0, 5.0, 1.0, 3.0, 2.0],
    ]
)


def test_top_m_per_pair():
    selected = top_m(SHIFTS, 3)
    assert [set(np.flatnonzero(row)) for row in selected] == [{0, 1, 2}, {1, 2, 3}, {0, 2, 4}]
    np.testing.assert_allclose(selection_frequency(SHIFTS, 3), [2 / 3, 2 / 3, 1, 1 / 3, 1 / 3, 0])


def test_top_m_breaks_ties_by_lower_index():
    assert list(np.flatnonzero(top_m(np.array([[1.0, 1.0, 1.0, 0.0]]), 2)[0])) == [0, 1]


def test_intersection_over_pairs():
    chosen, frequency = safety_neurons(SHIFTS, 3, "intersection")
    assert list(chosen) == [2]
    assert frequency[2] == 1.0


@pytest.mark.parametrize("q, expected", [(0.6, [0, 1, 2]), (2 / 3, [0, 1, 2]), (0.34, [0, 1, 2]), (1 / 3, [0, 1, 2, 3, 4]), (1.0, [2])])
def test_frequency_selection(q, expected):
    chosen, _ = safety_neurons(SHIFTS, 3, "frequency", q)
    assert list(chosen) == expected


def test_empty_set_is_a_clear_error_suggesting_m_or_q():
    # With m = 1 each pair picks a different neuron: no neuron is in all three.
    with pytest.raises(RimError, match=r"empty.*top_m.*min_fraction' <= 0\.33"):
        safety_neurons(SHIFTS, 1, "intersection")


def test_bad_m_and_q_name_their_keys():
    with pytest.raises(ConfigError, match="neurons.top_m"):
        top_m(SHIFTS, 7)
    with pytest.raises(ConfigError, match="neurons.min_fraction"):
        safety_neurons(SHIFTS, 3, "frequency", 0.0)
    with pytest.raises(ConfigError, match="neurons.selection"):
        safety_neurons(SHIFTS, 3, "union")


def test_pair_shifts_match_prompts_by_id():
    plain = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)  # prompts a, b, c
    intent = np.ones((2, 2, 2), dtype=np.float16) * 10  # -MI versions of c and a (b missing)
    pairs = pair_shifts(["a", "b", "c"], plain, ["c", "a"], intent)
    assert pairs.prompt_ids == ["a", "c"]
    assert pairs.shifts.shape == (2, 4)
    np.testing.assert_allclose(pairs.shifts[0], 10 - plain[0].ravel())
    np.testing.assert_allclose(pairs.shifts[1], 10 - plain[2].ravel())
    assert (pairs.n_layers, pairs.n_neurons) == (2, 2)


def test_pair_shifts_without_common_prompts_is_an_error():
    with pytest.raises(DataError, match="no prompt id is shared"):
        pair_shifts(["a"], np.zeros((1, 1, 2)), ["a-mi"], np.zeros((1, 1, 2)))


def test_random_sets_are_disjoint_same_size_and_seeded():
    reference = flat_index([0, 0, 3], [1, 5, 2], 8)
    sets = random_neuron_sets(4, 8, reference, draws=5, seed=7)
    assert len(sets) == 5
    for chosen in sets:
        assert chosen.size == 3 and len(set(chosen)) == 3
        assert not set(chosen) & set(reference)
        assert chosen.min() >= 0 and chosen.max() < 32
    again = random_neuron_sets(4, 8, reference, draws=5, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(sets, again))
    other = random_neuron_sets(4, 8, reference, draws=5, seed=8)
    assert any(not np.array_equal(a, b) for a, b in zip(sets, other))
    # Draws differ from each other.
    assert len({tuple(s) for s in sets}) > 1


def test_layer_matched_random_sets_keep_the_layer_counts():
    reference = flat_index([0, 0, 3], [1, 5, 2], 8)
    for chosen in random_neuron_sets(4, 8, reference, draws=4, seed=0, matching="layer"):
        layers, _ = layer_neuron(chosen, 8)
        assert sorted(layers.tolist()) == [0, 0, 3]
        assert not set(chosen) & set(reference)


def test_random_sets_fail_clearly_when_too_few_neurons_remain():
    with pytest.raises(ConfigError, match="cannot draw"):
        random_neuron_sets(1, 4, np.array([0, 1, 2]), draws=1, seed=0)


def test_flat_index_round_trip():
    layers, neurons = layer_neuron(flat_index([2, 0], [3, 7], 8), 8)
    assert layers.tolist() == [2, 0] and neurons.tolist() == [3, 7]


def test_zeroing_conditions_group_each_set_by_layer():
    import pandas as pd

    from rim.neurons import zeroing_conditions

    sets = pd.DataFrame({
        "neuron_set": ["safety", "safety", "random", "random", "random", "random"],
        "draw": pd.array([None, None, 0, 0, 1, 1], dtype="Int64"),
        "layer": [0, 2, 1, 1, 0, 3],
        "neuron": [5, 7, 1, 9, 4, 4],
    })
    chosen = zeroing_conditions(sets, random_draws=1)
    assert chosen == {"none": None, "safety": {0: [5], 2: [7]}, "random_0": {1: [1, 9]}}


def test_paired_changes_are_per_prompt_differences_from_no_intervention():
    import pandas as pd

    from rim.neurons import paired_changes

    # Three harmful prompts: refused plainly, two stop refusing with the safety neurons zeroed.
    rows = []
    for condition, refused in (("none", [True, True, False]), ("safety", [False, False, False]), ("random_0", [True, True, False])):
        for pid, flag in zip(("a", "b", "c"), refused):
            rows.append({"prompt_set": "harmful", "kind": "harmful", "condition": condition, "prompt_id": pid,
                         "phrases_refused": flag})
    changes = paired_changes(pd.DataFrame(rows), n_boot=200).set_index(["condition", "metric"])
    assert changes.loc[("safety", "misalignment_rate"), "value"] == pytest.approx(2 / 3)
    assert changes.loc[("safety", "refusal_rate"), "value"] == pytest.approx(-2 / 3)
    assert changes.loc[("random_0", "misalignment_rate"), "value"] == 0
    assert changes.loc[("random_0", "misalignment_rate"), "n"] == 3
