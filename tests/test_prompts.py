"""The project's prompt sets meet docs/METHODS.md §3 and the loader checks its input."""
import json

import pytest

from cape_hpc.errors import DataError
from cape_hpc.internals import load_prompts


def test_contrastive_set_size_and_domains():
    ps = load_prompts()
    assert len(ps) >= 100
    assert set(ps.sets) == {"reasoning", "truthfulness"}
    for s in ps.sets:
        doms = {p.domain for p in ps.select(s)}
        assert doms == {"factual", "reasoning", "ethical"}
    assert len({p.text for p in ps.prompts}) == len(ps)          # no duplicates
    assert len(ps.sha256) == 64


def test_calibration_set():
    cal = load_prompts(calibration=True)
    assert sum(p.true is True for p in cal.prompts) >= 32
    assert sum(p.true is False for p in cal.prompts) >= 32
    assert len({p.text for p in cal.prompts}) == len(cal)


def test_subset_is_balanced():
    ps = load_prompts().subset(10)
    assert len(ps.select("reasoning")) == 5 and len(ps.select("truthfulness")) == 5


def test_calibration_needs_booleans(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "x", "set": "t", "true": "yes"}) + "\n")
    with pytest.raises(DataError, match="c.jsonl: line 1: field 'true' must be true or false"):
        load_prompts(f, calibration=True)
    f.write_text(json.dumps({"id": "a", "text": "x", "set": "t", "true": True}) + "\n")
    with pytest.raises(DataError, match="both true and false"):
        load_prompts(f, calibration=True)


def test_duplicate_ids_and_missing_file(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"id": 1, "text": "a", "set": "x"}\n{"id": 1, "text": "b", "set": "y"}\n')
    with pytest.raises(DataError, match="line 2: duplicate id '1'"):
        load_prompts(f)
    with pytest.raises(DataError, match="not found"):
        load_prompts(tmp_path / "none.jsonl")
