"""GSM8K loading from the real release files (the copy shipped with the course, and the release
beside the repo when it is there), and from the Hub through a faithful fake."""

import gzip
import json
import re
from pathlib import Path

import pytest

from aha_utils.data.gsm8k import (BUNDLED_DIR, GSM8K_CONFIG, GSM8K_HUB_ID, GSM8K_REVISION,
                                  load_gsm8k, split_solution)
from aha_utils.rewards import gsm8k_reward

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
GSM8K_DIR = BUNDLED_DIR
CANONICAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def test_real_files_load_with_canonical_answers():
    test = load_gsm8k("test")                                   # the bundled copy, offline
    train = load_gsm8k("train", path=GSM8K_DIR / "train.jsonl.gz")
    assert (len(train), len(test)) == (7473, 1319)
    assert test[0]["answer"] == "18" and test[0]["question"].startswith("Janet")
    assert "####" not in test[0]["solution"] and test[0]["solution"].endswith("farmer’s market.")
    for row in train + test:
        assert set(row) == {"question", "answer", "solution"}
        assert CANONICAL.fullmatch(row["answer"]), row["answer"]
    assert {"-10", "-3"} <= {r["answer"] for r in test}


def test_every_real_test_solution_scores_one_with_its_answer_in_tags():
    raw_lines = gzip.decompress((GSM8K_DIR / "test.jsonl.gz").read_bytes()).decode().splitlines()
    problems = load_gsm8k("test", path=GSM8K_DIR)
    with_commas = 0
    for line, problem in zip(raw_lines, problems, strict=True):
        reasoning, final = json.loads(line)["answer"].split("####")
        with_commas += "," in final
        completion = f"{reasoning.strip()}\n</think>\n<answer> {final.strip()} </answer>"
        assert gsm8k_reward(completion, problem["answer"]) == 1.0, (final, problem["answer"])
    assert with_commas > 0  # the raw `#### 65,960` form was exercised


def test_split_solution():
    assert split_solution("a <<1+1=2>>2\n#### 1,234") == ("a <<1+1=2>>2", "1234")
    assert split_solution("#### -3") == ("", "-3")
    for bad in ["no marker", "#### 1 #### 2", "#### twelve", "#### 5 apples", "####"]:
        with pytest.raises(ValueError):
            split_solution(bad)


def test_local_path_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="test.jsonl"):
        load_gsm8k("test", path=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_gsm8k("validation", path=tmp_path)
    bad = tmp_path / "test.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "4"}) + "\n")
    with pytest.raises(ValueError, match="row 0"):
        load_gsm8k("test", path=tmp_path)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="test.jsonl:1"):
        load_gsm8k("test", path=bad)


def test_hub_path_with_a_real_dataset_object(monkeypatch):
    import datasets

    table = datasets.Dataset.from_dict(
        {"question": ["How many?", "How much?"], "answer": ["2 + 2 = <<2+2=4>>4\n#### 4", "so\n#### 1,000"]}
    )
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return table

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows = load_gsm8k("train", source="hub")
    # pinned to one Hub commit, so a later push cannot change the problems under a run
    assert calls == [((GSM8K_HUB_ID, GSM8K_CONFIG), {"split": "train", "revision": GSM8K_REVISION})]
    assert len(GSM8K_REVISION) == 40 and int(GSM8K_REVISION, 16) >= 0
    # local files (a folder, and the shipped copy) never go through the Hub
    local = load_gsm8k("test", path=BUNDLED_DIR)
    assert load_gsm8k("test") == local and len(local) == 1319 and len(calls) == 1
    assert rows == [
        {"question": "How many?", "answer": "4", "solution": "2 + 2 = <<2+2=4>>4"},
        {"question": "How much?", "answer": "1000", "solution": "so"},
    ]


def test_hub_path_offline_says_what_to_do(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="path="):
        load_gsm8k("test", source="hub")


def test_bundled_copy_is_the_release_byte_for_byte_with_its_licence():
    assert "MIT License" in (BUNDLED_DIR / "LICENSE").read_text()
    if not (SHARED_DIR / "test.jsonl").is_file():
        pytest.skip(f"no release beside the repo at {SHARED_DIR} to compare with")
    for split in ("train", "test"):
        shipped = gzip.decompress((BUNDLED_DIR / f"{split}.jsonl.gz").read_bytes())
        assert shipped == (SHARED_DIR / f"{split}.jsonl").read_bytes()
    assert load_gsm8k("test") == load_gsm8k("test", path=SHARED_DIR)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="source"):
        load_gsm8k("test", source="kaggle")
