"""Dataset preparation: schemas, splits, derived sets, external sources and bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rim.data.prepare import MATH_COLUMNS, PROMPT_COLUMNS, assign_split, prepare_dataset
from rim.errors import DataError


def test_embedded_harmful_set_covers_the_ten_categories_and_splits_disjointly():
    table = prepare_dataset(
        "harmful", {"kind": "prompts", "source": "embedded:harmful", "eval_fraction": 0.5, "split_seed": 0}
    )
    assert list(table.columns) == PROMPT_COLUMNS
    assert len(table) >= 300 and table["category"].nunique() == 10
    train, evaluation = table[table.split == "train"], table[table.split == "eval"]
    assert set(train.prompt_id).isdisjoint(evaluation.prompt_id)
    assert set(train.prompt).isdisjoint(evaluation.prompt)
    # Stratified: every category is in both splits, about half each.
    per_category = table.groupby(["category", "split"]).size().unstack()
    assert (per_category["eval"] - per_category["train"]).abs().max() <= 1


def test_split_is_deterministic_and_seed_dependent():
    frame = pd.DataFrame({"category": ["a"] * 10 + ["b"] * 10})
    first = assign_split(frame, 0.3, seed=1, stratify="category")
    assert first.equals(assign_split(frame, 0.3, seed=1, stratify="category"))
    assert not first.equals(assign_split(frame, 0.3, seed=2, stratify="category"))
    assert (first == "eval").sum() == 6


def test_harmless_set_has_lookalikes_and_responses():
    table = prepare_dataset("harmless", {"kind": "prompts", "source": "embedded:harmless"})
    assert table["lookalike"].dtype == bool
    assert table["lookalike"].sum() >= 90
    assert (table["response"].str.len() > 0).all()
    assert len(table) >= 300


def test_malicious_intent_set_pairs_with_the_plain_prompts(tmp_path):
    base = prepare_dataset("harmful", {"kind": "prompts", "source": "embedded:harmful"})
    base.to_parquet(tmp_path / "harmful.parquet")
    mi = prepare_dataset(
        "harmful_mi",
        {"derive_from": "harmful", "intents": "embedded:intents"},
        derived_from=tmp_path / "harmful.parquet",
    )
    assert (mi["base_prompt_id"] == base["prompt_id"]).all()
    assert (mi["split"] == base["split"]).all()
    first = mi.iloc[0]
    assert first["prompt"] == f"{base.iloc[0]['prompt']} {first['intent']}"
    assert mi.groupby("category")["intent"].nunique().eq(1).all()


def test_math_generator_set_has_numeric_answers_and_final_marks():
    table = prepare_dataset(
        "gsm8k_style", {"kind": "math", "source": "generator:gsm8k_style", "n": 30, "seed": 0, "eval_fraction": 0.0}
    )
    assert list(table.columns) == MATH_COLUMNS
    assert len(table) == 30 and (table["split"] == "train").all()
    assert (table["final"] == "#### " + table["answer"]).all()


def test_held_out_math_drops_every_problem_a_training_set_holds(tmp_path):
    training = prepare_dataset(
        "train", {"kind": "math", "source": "generator:gsm8k_style", "n": 40, "seed": 0, "eval_fraction": 0.0}
    )
    # Two training problems re-typed with other case and spacing: still the same problems.
    shown = training.iloc[[3, 17]]
    local = pd.DataFrame(
        {
            "question": [
                "  " + shown.iloc[0]["question"].upper(),
                shown.iloc[1]["question"].replace(" ", "  "),
                "What is 2 + 40?",
            ],
            "answer": [shown.iloc[0]["answer"], shown.iloc[1]["answer"], "42"],
        }
    )
    local.to_csv(tmp_path / "local.csv", index=False)
    training.to_parquet(tmp_path / "train.parquet")
    entry = {"kind": "math", "source": str(tmp_path / "local.csv"), "eval_fraction": 1.0, "disjoint_from": ["train"]}
    held_out = prepare_dataset("heldout", entry, disjoint_from={"train": tmp_path / "train.parquet"})
    assert held_out["question"].tolist() == ["What is 2 + 40?"]
    assert (held_out["split"] == "eval").all()
    # Without the training table it cannot check, so it refuses rather than keep the overlap.
    with pytest.raises(DataError, match="must be disjoint from train: pass their prepared tables"):
        prepare_dataset("heldout", entry)
    everything = {**entry, "source": "generator:gsm8k_style", "n": 40, "seed": 0}
    with pytest.raises(DataError, match="every row also appears in train"):
        prepare_dataset("heldout", everything, disjoint_from={"train": tmp_path / "train.parquet"})


def test_local_csv_with_column_mapping(tmp_path):
    path = tmp_path / "alpaca.csv"
    pd.DataFrame({"instruction": ["Give three tips.", "Name a color."], "output": ["Sleep.", "Blue."]}).to_csv(
        path, index=False
    )
    table = prepare_dataset("alpaca", {"source": str(path), "columns": {"prompt": "instruction", "response": "output"}})
    assert table["prompt"].tolist() == ["Give three tips.", "Name a color."]
    assert table["prompt_id"].tolist() == ["alpaca-00001", "alpaca-00002"]
    assert table["category"].tolist() == ["none", "none"]


def test_local_jsonl_gsm8k_answers_are_split_into_reasoning_and_number(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    rows = [
        {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "A box holds 1,200 pens. How many in 2 boxes?", "answer": "1,200 * 2 = 2,400\n#### 2,400"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    table = prepare_dataset("gsm8k", {"kind": "math", "source": str(path)})
    assert table["answer"].tolist() == ["5", "2400"]
    assert table["reasoning"].tolist() == ["2 + 3 = 5", "1,200 * 2 = 2,400"]


def test_txt_source_has_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Write a poem.\nSummarise a paragraph.\n")
    assert prepare_dataset("txt", {"source": str(path)})["prompt"].tolist() == [
        "Write a poem.",
        "Summarise a paragraph.",
    ]


# ----- bad input -------------------------------------------------------------------------------
def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"in .*missing\.csv: file does not exist"):
        prepare_dataset("x", {"source": str(tmp_path / "missing.csv")})


def test_missing_column_names_the_file_and_the_columns_it_has(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"text": ["a"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"p\.csv: missing column 'prompt'; the file has: text\. Map it"):
        prepare_dataset("x", {"source": str(path)})
    with pytest.raises(DataError, match=r"missing column 'instruction' \(mapped from 'instruction'\)"):
        prepare_dataset("x", {"source": str(path), "columns": {"prompt": "instruction"}})


def test_empty_prompt_names_file_and_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt\n"First prompt"\n"   "\n"Third"\n')
    with pytest.raises(DataError, match=r"p\.csv row 2: empty prompt"):
        prepare_dataset("x", {"source": str(path)})


def test_duplicate_prompts_name_both_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt\nAlpha\nBeta\nAlpha \n")
    with pytest.raises(DataError, match=r"p\.csv row 3: duplicate prompt in rows 1, 3: 'Alpha'"):
        prepare_dataset("x", {"source": str(path)})


def test_non_numeric_math_answer_names_file_and_row(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("question,answer\nOne plus one?,2\nTwo plus two?,four\n")
    with pytest.raises(DataError, match=r"m\.csv row 2: answer 'four' is not a number"):
        prepare_dataset("m", {"kind": "math", "source": str(path)})


def test_unknown_generator_and_embedded_set(tmp_path):
    with pytest.raises(DataError, match="unknown generator 'gsm9k'"):
        prepare_dataset("m", {"kind": "math", "source": "generator:gsm9k"})
    with pytest.raises(DataError, match="embedded dataset 'harmfull' does not exist; known: .*harmful"):
        prepare_dataset("h", {"source": "embedded:harmfull"})


def test_missing_intent_for_a_category(tmp_path):
    base = pd.DataFrame(
        {"prompt_id": ["h1"], "prompt": ["Do a bad thing."], "category": ["new_category"], "split": ["eval"]}
    )
    base.to_parquet(tmp_path / "h.parquet")
    with pytest.raises(DataError, match="no intent sentence for categories: new_category"):
        prepare_dataset("mi", {"derive_from": "h"}, derived_from=tmp_path / "h.parquet")


def test_unreachable_hub_dataset_says_so(hub_offline):
    with pytest.raises(DataError, match="could not load Hugging Face dataset 'nobody/nothing'"):
        prepare_dataset("x", {"source": "hf:nobody/nothing"})
