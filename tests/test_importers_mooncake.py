"""Mooncake chain recovery: sessions built from hash chains come back exactly; ties and forks
follow the documented rules."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.workload.importers import import_source
from kairosbench.workload.importers.mooncake import BLOCK_TOKENS, Request, recover_chains

FIXTURES = Path(__file__).parent / "fixtures" / "importers"


def _req(line: int, ts: float, inp: int, out: int, ids: list[int]) -> Request:
    return Request(line=line, timestamp_ms=ts, input_length=inp, output_length=out, hash_ids=tuple(ids))


def test_small_fixture() -> None:
    wl = import_source("mooncake", FIXTURES / "mooncake_small.jsonl")
    by_id = {s.session_id: s for s in wl.sessions}
    assert sorted(by_id) == ["mooncake_small:1", "mooncake_small:2", "mooncake_small:4", "mooncake_small:5"]
    chat = by_id["mooncake_small:1"]
    assert [t.prompt_tokens for t in chat.turns] == [1100, 1300]
    assert [t.appended_tokens for t in chat.turns] == [1100, 1300 - 1100 - 50]
    assert [t.tool_duration_s for t in chat.turns] == [3.0, 0.0]
    assert chat.turns[1].prefix_hashes == [0, 1, 3]
    assert all(t.token_count_method == "usage" for s in wl.sessions for t in s.turns)
    # line 4 shares line 1's full blocks, but line 1 was continued already (and line 3 is
    # longer than line 4): a fork, so a session of its own
    counts = wl.meta["import"]["counts"]
    assert counts["forks_started_a_new_session"] == 1
    assert counts["requests_linked_to_an_earlier_turn"] == 1
    assert by_id["mooncake_small:4"].arrival_s == 6.0


def test_one_shared_block_never_links() -> None:
    """Block 0 (the system prompt) is shared by every request; it alone is no evidence."""
    reqs = [_req(1, 0, 600, 10, [0, 1]), _req(2, 1, 1200, 10, [0, 1, 2])]
    # request 1 has only one full block, so it cannot be a parent
    assert recover_chains(reqs).chains == [[0], [1]]


def test_longest_prefix_wins() -> None:
    reqs = [
        _req(1, 0, 1100, 10, [0, 1, 2]),  # full blocks [0, 1]
        _req(2, 1, 1600, 10, [0, 1, 2, 3]),  # continues 1; full blocks [0, 1, 2]
        _req(3, 2, 2100, 10, [0, 1, 2, 4, 5]),  # matches 1 (2 blocks) and 2 (3 blocks): 2 wins
    ]
    result = recover_chains(reqs)
    assert result.chains == [[0, 1, 2]]
    assert result.parent == [None, 0, 1]


def test_tie_prefers_open_then_latest() -> None:
    """A regenerated request (same prompt twice): what follows continues the latest one."""
    reqs = [
        _req(1, 0, 1100, 10, [0, 1, 2]),
        _req(2, 1, 1100, 12, [0, 1, 3]),  # same full blocks as 1: a retry or regeneration
        _req(3, 2, 1500, 10, [0, 1, 4]),  # continues one of them: the latest, 2
        _req(4, 3, 1500, 10, [0, 1, 5]),  # continues the other still-open one, 1
    ]
    result = recover_chains(reqs)
    assert result.parent == [None, None, 1, 0]
    assert result.ties == 2
    assert result.forks == 0


def test_child_shorter_than_parent_is_not_a_continuation() -> None:
    reqs = [_req(1, 0, 1500, 10, [0, 1, 2]), _req(2, 1, 1030, 10, [0, 1, 3])]
    assert recover_chains(reqs).parent == [None, None]


@st.composite
def _sessions(draw: st.DrawFn) -> list[list[tuple[float, int, int]]]:
    """Sessions of turns ``(arrival_ms, input_length, output_length)`` with growing contexts."""
    sessions = []
    for _ in range(draw(st.integers(1, 6))):
        t = draw(st.integers(0, 50_000))
        inp = draw(st.integers(2 * BLOCK_TOKENS, 6 * BLOCK_TOKENS))
        turns = []
        for _ in range(draw(st.integers(1, 6))):
            out = draw(st.integers(0, 800))
            turns.append((float(t), inp, out))
            t += draw(st.integers(1, 20_000))
            inp += out + draw(st.integers(1, 3 * BLOCK_TOKENS))
        sessions.append(turns)
    return sessions


def _trace(sessions: list[list[tuple[float, int, int]]]) -> list[tuple[float, int, int, list[int], int]]:
    """Requests with Mooncake-style hash ids, sorted by arrival: (ts, inp, out, ids, session)."""
    next_id = 1  # 0 is the shared system-prompt block
    rows = []
    for s, turns in enumerate(sessions):
        shared: list[int] = []  # the previous request's full blocks: what a turn re-sends
        for ts, inp, out in turns:
            ids = list(shared) if shared else [0]
            while len(ids) < -(-inp // BLOCK_TOKENS):
                ids.append(next_id)  # new content (and the previous partial block, now fuller)
                next_id += 1
            rows.append((ts, inp, out, ids, s))
            shared = ids[: inp // BLOCK_TOKENS]
    rows.sort(key=lambda r: r[0])
    return rows


@settings(max_examples=200, deadline=None)
@given(sessions=_sessions())
def test_chains_are_recovered_exactly(sessions: list[list[tuple[float, int, int]]]) -> None:
    rows = _trace(sessions)
    reqs = [_req(i + 1, ts, inp, out, ids) for i, (ts, inp, out, ids, _) in enumerate(rows)]
    result = recover_chains(reqs)
    recovered = sorted(sorted(rows[j][4] for j in chain) for chain in result.chains)
    assert all(len(set(c)) == 1 for c in recovered)  # no chain mixes two sessions
    assert sorted(c[0] for c in recovered) == list(range(len(sessions)))  # none is split
    assert result.forks == 0


@settings(max_examples=50, deadline=None)
@given(sessions=_sessions())
def test_import_reproduces_the_turns(tmp_path_factory: object, sessions: list[list[tuple[float, int, int]]]) -> None:
    rows = _trace(sessions)
    path = tmp_path_factory.mktemp("mc") / "trace.jsonl"  # type: ignore[attr-defined]
    path.write_text(
        "".join(
            json.dumps({"timestamp": ts, "input_length": inp, "output_length": out, "hash_ids": ids}) + "\n"
            for ts, inp, out, ids, _ in rows
        )
    )
    wl = import_source("mooncake", path)
    got = sorted(
        [(s.arrival_s, [(t.prompt_tokens, t.output_tokens, t.tool_duration_s) for t in s.turns]) for s in wl.sessions]
    )
    want = []
    for turns in sessions:
        items = []
        for k, (ts, inp, out) in enumerate(turns):
            gap = (turns[k + 1][0] - ts) / 1000.0 if k + 1 < len(turns) else 0.0
            items.append((inp, out, gap))
        want.append((turns[0][0] / 1000.0, items))
    assert got == sorted(want)
    for s in wl.sessions:  # appended tokens re-create the recorded prompts exactly (no clamps)
        assert s.prompt_tokens() == [t.prompt_tokens for t in s.turns]
    assert "appended_tokens_clamped_to_0" not in wl.meta["import"]["counts"]
