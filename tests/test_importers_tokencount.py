"""Token counting for importers: the estimate, a local Hugging Face tokenizer, and their errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kairosbench.errors import UsageError
from kairosbench.workload.importers import import_source
from kairosbench.workload.tokencount import CHARS_PER_TOKEN, EstimateCounter, HFTokenizerCounter, make_counter

FIXTURES = Path(__file__).parent / "fixtures" / "importers"


def test_estimate_rule() -> None:
    est = EstimateCounter()
    assert est.method == "estimate"
    assert est.count("") == 0
    assert est.count("abc") == 1
    assert est.count("x" * 35) == 10  # 35 chars / 3.5
    assert EstimateCounter(chars_per_token=4).count("x" * 9) == 3


@given(st.text(max_size=200), st.text(max_size=200))
def test_estimate_is_monotone_and_near_additive(a: str, b: str) -> None:
    est = EstimateCounter()
    assert est.count(a + b) >= max(est.count(a), est.count(b))
    assert abs(est.count(a + b) - len(a + b) / CHARS_PER_TOKEN) < 1


def test_no_tokenizer_means_estimate() -> None:
    assert make_counter(None).method == "estimate"
    assert make_counter("").method == "estimate"


def _word_tokenizer(directory: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "ls": 3}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory


def test_hf_tokenizer_directory_and_file(tmp_path: Path) -> None:
    directory = _word_tokenizer(tmp_path / "tok")
    for where in (directory, directory / "tokenizer.json"):
        counter = make_counter(str(where))
        assert isinstance(counter, HFTokenizerCounter)
        assert counter.method == "tokenizer"
        assert counter.count("hello world ls unknown-word") == 6  # Whitespace splits '-' off
        assert counter.count("") == 0


def test_import_with_tokenizer(tmp_path: Path) -> None:
    directory = _word_tokenizer(tmp_path / "tok")
    wl = import_source("mini-swe-agent", FIXTURES / "mini_swe_agent_small.traj.json", tokenizer=str(directory))
    assert {t.token_count_method for s in wl.sessions for t in s.turns} == {"tokenizer"}
    assert wl.meta["import"]["token_counts"]["tokenizer"] == str(directory / "tokenizer.json")
    # recorded usage still wins where a trace has it
    wl = import_source("openhands", FIXTURES / "openhands_small.json", tokenizer=str(directory))
    assert {t.token_count_method for s in wl.sessions for t in s.turns} == {"usage"}


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory or file"):
        make_counter(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="has no tokenizer.json"):
        make_counter(str(tmp_path))
    bad = tmp_path / "bad" / "tokenizer.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"not": "a tokenizer"}))
    pytest.importorskip("tokenizers")
    with pytest.raises(UsageError, match="cannot load"):
        make_counter(str(bad.parent))


def test_missing_tokenizers_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'kairosbench\[hf\]'"):
        make_counter(str(tmp_path))
