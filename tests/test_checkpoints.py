"""Checkpoint ids: one parser and one writer for the whole workflow (rim.checkpoints)."""

import pytest

from rim.checkpoints import Checkpoint, checkpoint_fields, checkpoint_id, parse_checkpoint
from rim.errors import ConfigError


def test_ids_round_trip_and_step_0_is_the_base_model():
    assert checkpoint_id("gsm8k_style", 2, 60) == "gsm8k_style/seed2/step60"
    assert parse_checkpoint("gsm8k_style/seed2/step60") == Checkpoint("gsm8k_style", 2, 60)
    assert checkpoint_id("gsm8k_style", 2, 0) == "base"
    assert parse_checkpoint("base") == Checkpoint(None, None, 0)
    # A run name may hold digits, underscores and the words seed or step.
    assert parse_checkpoint("seed_step_2/seed10/step7") == Checkpoint("seed_step_2", 10, 7)


def test_fields_are_the_identity_columns_of_a_table_row():
    assert checkpoint_fields("base") == {"checkpoint": "base", "run": None, "seed": None, "step": 0}
    assert checkpoint_fields("long_cot/seed0/step4") == {
        "checkpoint": "long_cot/seed0/step4",
        "run": "long_cot",
        "seed": 0,
        "step": 4,
    }


@pytest.mark.parametrize("bad", ["gsm8k/seed0", "gsm8k/0/step4", "gsm8k/seedX/step4", "a/b/seed0/step4", "", "Base"])
def test_a_malformed_id_names_itself_and_the_two_forms(bad):
    with pytest.raises(ConfigError, match=f"checkpoint id '{bad}' is neither 'base' nor"):
        parse_checkpoint(bad)
