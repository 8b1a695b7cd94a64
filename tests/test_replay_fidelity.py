"""Replay fidelity against a loopback recording server: what a real agent would send, exactly."""

from __future__ import annotations

import json
from pathlib import Path

from kairosbench import tokenizer as emu
from kairosbench.replay.config import RunConfig
from kairosbench.replay.manifest import read_manifest
from kairosbench.replay.mockserver import MockBehavior, MockServer
from kairosbench.replay.orchestrate import run_from_config
from kairosbench.replay.records import read_table
from kairosbench.workload.model import Session, Turn, Workload


def workload(n: int = 3, turns: int = 4) -> Workload:
    ss = []
    for i in range(n):
        ts = [Turn(appended_tokens=1500 if j == 0 else 120 + 7 * j, output_tokens=12 + j, tool_duration_s=1.0) for j in range(turns)]
        ss.append(Session(f"agent-{i}", "swe" if i % 2 == 0 else "de", 0.5 * i, ts))
    return Workload(ss)


def config(tmp: Path, urls: list[str], **kw) -> RunConfig:
    return RunConfig(endpoint=urls, out=str(tmp / "run"), progress=False, time_scale=0.01, **kw)


def by_session(b: MockBehavior) -> dict[str, list[tuple[int, dict, dict]]]:
    out: dict[str, list[tuple[int, dict, dict]]] = {}
    for i, (body, headers) in enumerate(zip(b.received, b.headers_seen), start=1):
        out.setdefault(body["user"], []).append((i, body, headers))
    return out


async def test_history_is_resent_exactly_with_the_streamed_replies(tmp_path: Path) -> None:
    b = MockBehavior(record=True, emulator_like=True, fancy_text=True, itl_s=0.0)
    wl = workload()
    async with MockServer(b) as url:
        out = await run_from_config(config(tmp_path, [url]), workload=wl)
    assert out.status == "completed"
    sessions = by_session(b)
    assert set(sessions) == {s.session_id for s in wl.sessions}
    for sess in wl.sessions:
        reqs = sessions[sess.session_id]
        assert len(reqs) == len(sess.turns)
        targets = sess.prompt_tokens()
        for t, (index, body, headers) in enumerate(reqs):
            msgs = body["messages"]
            assert headers["X-Kairosbench-Agent"] == sess.session_id
            assert headers["X-Kairosbench-Turn"] == str(t)
            assert headers["X-Kairosbench-Prompt-Tokens"] == str(emu.chat_prompt_tokens(msgs))
            assert headers.get("X-Kairosbench-Final") == ("1" if t == len(sess.turns) - 1 else None)
            assert body["max_tokens"] == sess.turns[t].output_tokens
            assert body["ignore_eos"] is True and body["stream"] is True
            assert body["stream_options"] == {"include_usage": True}
            assert emu.chat_prompt_tokens(msgs) == targets[t]
            if t:
                prev_index, prev_body, _ = reqs[t - 1]
                n = len(prev_body["messages"])
                assert msgs[:n] == prev_body["messages"]  # whole history resent unchanged
                # the reply as the endpoint produced it, escapes and all
                assert msgs[n] == {"role": "assistant", "content": b.sent_text[prev_index]}
                assert [m["role"] for m in msgs[n + 1 :]] == ["user"]
    req = read_table(out.run_dir, "requests").to_pandas()
    assert (req["status"] == "ok").all()
    assert (req["prompt_tokens"] == req["prompt_tokens_expected"]).all()
    assert (req["prompt_tokens_sent"] == req["prompt_tokens"]).all()
    assert (req["output_tokens"] == req["output_tokens_expected"]).all()
    assert (req["eos_control"] == "ignore_eos").all()
    assert out.summary is not None and out.summary.prompt_exact_fraction == 1.0


async def test_sessions_stick_to_endpoints_round_robin(tmp_path: Path) -> None:
    b1, b2 = MockBehavior(record=True, emulator_like=True), MockBehavior(record=True, emulator_like=True)
    async with MockServer(b1) as u1, MockServer(b2) as u2:
        out = await run_from_config(config(tmp_path, [u1, u2]), workload=workload(n=4, turns=2))
    s1, s2 = set(by_session(b1)), set(by_session(b2))
    assert s1 == {"agent-0", "agent-2"} and s2 == {"agent-1", "agent-3"}
    sess = read_table(out.run_dir, "sessions").to_pandas().set_index("session_id")
    assert sess.loc["agent-1", "endpoint"] == u2


async def test_eos_parameters_dropped_when_rejected_and_recorded(tmp_path: Path) -> None:
    b = MockBehavior(record=True, emulator_like=True, reject_params=("ignore_eos",))
    async with MockServer(b) as url:
        out = await run_from_config(config(tmp_path, [url]), workload=workload(n=2, turns=2))
    req = read_table(out.run_dir, "requests").to_pandas()
    assert (req["status"] == "ok").all() and len(req) == 4
    assert set(req["eos_control"]) == {"min_tokens"}
    sent = [body for body in b.received if "ignore_eos" not in body]
    assert all(body["min_tokens"] == body["max_tokens"] for body in sent)
    manifest = read_manifest(out.run_dir)
    (downgrade,) = manifest["endpoints"][0]["downgrades"]
    assert downgrade["parameter"] == "ignore_eos" and downgrade["to"] == "min_tokens"
    assert "ignore_eos" in downgrade["server_message"]


async def test_endpoint_that_accepts_neither_gets_plain_max_tokens(tmp_path: Path) -> None:
    b = MockBehavior(record=True, emulator_like=True, reject_params=("ignore_eos", "min_tokens"))
    async with MockServer(b) as url:
        out = await run_from_config(config(tmp_path, [url]), workload=workload(n=1, turns=2))
    req = read_table(out.run_dir, "requests").to_pandas()
    assert list(req["eos_control"]) == ["none", "none"] and (req["status"] == "ok").all()


async def test_multi_token_chunks_are_counted_per_token(tmp_path: Path) -> None:
    b = MockBehavior(emulator_like=True, tokens_per_chunk=4, itl_s=0.001)
    async with MockServer(b) as url:
        out = await run_from_config(config(tmp_path, [url]), workload=workload(n=1, turns=3))
    req = read_table(out.run_dir, "requests").to_pandas()
    assert (req["output_tokens_counted"] == req["output_tokens"]).all()
    assert list(req["chunks"]) == [-(-n // 4) for n in req["output_tokens"]]
    assert (req["itl_mean_s"] == req["tpot_s"]).all()


async def test_remote_tokenize_route_is_used_when_not_an_emulator(tmp_path: Path) -> None:
    b = MockBehavior(record=True, emulator_like=False)
    async with MockServer(b) as url:
        out = await run_from_config(config(tmp_path, [url]), workload=workload(n=1, turns=3))
    manifest = read_manifest(out.run_dir)
    assert manifest["endpoints"][0]["tokenizer"]["name"].startswith("remote:")
    req = read_table(out.run_dir, "requests").to_pandas()
    # the mock's /tokenize is the emulator tokenizer, so sizes come out exact here too
    assert (req["prompt_tokens"] == req["prompt_tokens_expected"]).all()
    assert json.loads((out.run_dir / "manifest.json").read_text())["status"] == "completed"
