"""The reverse proxy on real loopback sockets: streaming passthrough, agent identity, usage, holds, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pandas as pd
import pytest

from kairosbench.gateway.launch import running_gateway
from kairosbench.gateway.loopback import running_loopback
from kairosbench.gateway.identity import ContextEstimator
from kairosbench.gateway.relay import UsageScanner

pytestmark = pytest.mark.timeout(60)


def chat(words: int, max_tokens: int = 4, stream: bool = True, **extra) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": " ".join(["w"] * words)}], "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return body


def test_usage_scanner_finds_usage_split_across_chunks() -> None:
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":123,"completion_tokens":2}}\n\ndata: [DONE]\n\n'
    )
    for size in (1, 3, 7, 64, len(stream)):
        sc = UsageScanner()
        for i in range(0, len(stream), size):
            sc.feed(stream[i : i + size])
        sc.finish()
        assert (sc.prompt_tokens, sc.completion_tokens, sc.choice_events) == (123, 2, 2)


def test_context_estimator_learns_bytes_per_token() -> None:
    est = ContextEstimator()
    assert est.estimate("a", 4000, None) == 1000  # first request: 4 bytes per token
    est.observe("a", 4000, 500)  # the server said 500 tokens: 8 bytes per token for this agent
    assert est.estimate("a", 4800, None) == 600
    assert est.estimate("a", 4800, "777") == 777  # the client's header wins


async def test_streams_through_and_tracks_agent_context(tmp_path: Path) -> None:
    async with running_loopback(1, token_delay_s=0.001) as (urls, states):
        async with running_gateway(urls, "max", tmp_path, epoch_s=0.05) as gw, aiohttp.ClientSession() as s:
            chunks = []
            async with s.post(gw + "/v1/chat/completions", json=chat(10, 6), headers={"X-Kairosbench-Agent": "A", "X-Kairosbench-Turn": "0", "Authorization": "Bearer sk-secret"}) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
                async for chunk in r.content.iter_any():
                    chunks.append(chunk)
            text = b"".join(chunks).decode()
            assert text.count('"delta"') == 6 and text.rstrip().endswith("data: [DONE]")
            assert states[0].headers_seen[0]["Authorization"] == "Bearer sk-secret"  # passed through
            assert states[0].headers_seen[0]["X-Kairosbench-Agent"] == "A"
            async with s.get(gw + "/kairosbench/gateway") as r:
                state = await r.json()
            # 10 words + 2 per message + 1 = 13 prompt tokens, + 6 output = 19 tokens resident
            assert state["instances"][0]["resident_context_tokens"] == 19 and state["live_agents"] == 1
            # Non-streaming works too and usage is read from the JSON body.
            async with s.post(gw + "/v1/chat/completions", json=chat(20, 3, stream=False), headers={"X-Kairosbench-Agent": "A"}) as r:
                assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 3
            async with s.get(gw + "/v1/models") as r:
                assert (await r.json())["data"][0]["id"] == "loopback"
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    assert list(rows["prompt_tokens"]) == [13, 23] and list(rows["output_tokens"]) == [6, 3]
    assert rows["ok"].all() and set(rows["agent_source"]) == {"header"}
    assert "sk-secret" not in (tmp_path / "gateway.json").read_text()


async def test_identity_from_user_field_and_anonymous_single_turn(tmp_path: Path) -> None:
    async with running_loopback(1) as (urls, _):
        async with running_gateway(urls, "max", tmp_path, epoch_s=0.05) as gw, aiohttp.ClientSession() as s:
            for body in (chat(3, user="bob"), chat(3), chat(3)):
                async with s.post(gw + "/v1/chat/completions", json=body) as r:
                    await r.read()
            async with s.get(gw + "/kairosbench/gateway") as r:
                state = await r.json()
    assert state["live_agents"] == 1  # bob stays; the two anonymous requests were single-turn agents
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    assert list(rows["agent_source"]) == ["user", "anonymous", "anonymous"]
    assert rows["agent_id"].iloc[0] == "bob"


async def test_kairos_holds_agents_at_the_gateway_and_releases_them(tmp_path: Path) -> None:
    # KV capacity 100 tokens: β·U_max = 95, γ·U_max = 90.
    async with running_loopback(1, token_delay_s=0.01, kv_capacity_tokens=100) as (urls, states):
        async with running_gateway(urls, "kairos", tmp_path, epoch_s=0.05) as gw, aiohttp.ClientSession() as s:

            async def turn(agent: str, words: int, final: bool = False) -> str:
                headers = {"X-Kairosbench-Agent": agent, "X-Kairosbench-Prompt-Tokens": str(words + 3)}
                if final:
                    headers["X-Kairosbench-Final"] = "1"
                async with s.post(gw + "/v1/chat/completions", json=chat(words, 5), headers=headers) as r:
                    await r.read()
                    assert r.status == 200
                return agent

            await turn("a", 27)  # a: 30 + 5 = 35 tokens resident
            await turn("b", 27)  # b: admitted (35 < 90 and 35 + 30 <= 95); U_k = 70
            # Both grow to 50-token prompts: the first to arrive goes (35 + 50 = 85 <= 95),
            # the second would make U_k 100 > 95 and is held at the gateway.
            tasks = [asyncio.create_task(turn(name, 47)) for name in ("a", "b")]
            done, waiting = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1 and len(waiting) == 1
            first = done.pop().result()
            async with s.get(gw + "/kairosbench/gateway") as r:
                assert (await r.json())["held_agents"] == 1
            # The first agent's last turn: it queues behind the held one (FIFO), which leaves U_k
            # to it; both go, and the session end frees the rest.
            await turn(first, 1, final=True)
            (other,) = await asyncio.wait_for(asyncio.gather(*waiting), 10)
            assert other != first
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    held = rows[rows["held"]]
    # The other agent's grown turn waited; the first agent's last turn may also queue briefly
    # behind it (FIFO per instance), never ahead of it.
    assert other in set(held["agent_id"]) and (held["waited_s"] > 0).all()
    assert rows["ok"].all()
    control = pd.read_parquet(tmp_path / "control.parquet")
    assert (control["cap_hold_above_tokens"] == 95).all() and (control["cap_admit_below_tokens"] == 90).all()


async def test_unreachable_upstream_is_a_502_with_openai_error(tmp_path: Path) -> None:
    async with running_loopback(1) as (urls, _):
        pass  # closed again: the port now refuses
    async with running_gateway(urls, "max", tmp_path, epoch_s=0.05, telemetry="none") as gw, aiohttp.ClientSession() as s:
        async with s.post(gw + "/v1/chat/completions", json=chat(3), headers={"X-Kairosbench-Agent": "x"}) as r:
            assert r.status == 502
            err = (await r.json())["error"]
            assert err["type"] == "upstream_error" and "failed" in err["message"]
        async with s.post(gw + "/v1/chat/completions", json=chat(3), headers={"X-Kairosbench-Agent": "x"}) as r:
            assert r.status == 502  # the agent can retry; the tracker did not wedge
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    assert (~rows["ok"]).all() and rows["error"].str.contains("unreachable").all()


async def test_client_disconnect_mid_stream_frees_the_upstream(tmp_path: Path) -> None:
    async with running_loopback(1, token_delay_s=0.01) as (urls, states):
        async with running_gateway(urls, "max", tmp_path, epoch_s=0.05) as gw:
            async with aiohttp.ClientSession() as s:
                async with s.post(gw + "/v1/chat/completions", json=chat(3, 500), headers={"X-Kairosbench-Agent": "q"}) as r:
                    await r.content.readany()
            for _ in range(200):
                if states[0].running == 0:
                    break
                await asyncio.sleep(0.01)
            assert states[0].running == 0
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    assert not rows["ok"].iloc[0] and "client went away" in rows["error"].iloc[0]


async def test_state_route_and_agent_delete(tmp_path: Path) -> None:
    async with running_loopback(2) as (urls, _):
        async with running_gateway(urls, "least-loaded", tmp_path, epoch_s=0.05) as gw, aiohttp.ClientSession() as s:
            for agent in ("a", "b"):
                async with s.post(gw + "/v1/chat/completions", json=chat(5), headers={"X-Kairosbench-Agent": agent}) as r:
                    await r.read()
            async with s.delete(gw + "/kairosbench/agents/a") as r:
                assert (await r.json()) == {"agent_id": "a", "known": True}
            async with s.get(gw + "/kairosbench/gateway") as r:
                state = await r.json()
    assert state["live_agents"] == 1 and state["counters"]["agents_done"] == 1
    assert json.loads((tmp_path / "gateway.json").read_text())["policy"] == "least-loaded"


async def test_upstream_dying_mid_stream_resets_the_client_and_is_recorded(tmp_path: Path) -> None:
    async with running_loopback(1) as (urls, _):
        async with running_gateway(urls, "max", tmp_path, epoch_s=0.05) as gw, aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.post(gw + "/v1/chat/completions", json=chat(3, 10, kairosbench_break_after=3), headers={"X-Kairosbench-Agent": "z"}) as r:
                    assert r.status == 200
                    await r.read()
            # the agent can go on: the next turn works
            async with s.post(gw + "/v1/chat/completions", json=chat(3, 2), headers={"X-Kairosbench-Agent": "z"}) as r:
                assert r.status == 200 and (await r.text()).count('"delta"') == 2
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    assert "upstream stream broke" in rows["error"].iloc[0] and not rows["ok"].iloc[0] and rows["ok"].iloc[1]


async def test_upstream_error_status_passes_through(tmp_path: Path) -> None:
    async with running_loopback(1) as (urls, _):
        async with running_gateway(urls, "max", tmp_path, epoch_s=0.05) as gw, aiohttp.ClientSession() as s:
            async with s.post(gw + "/v1/chat/completions", data=b"{not json", headers={"X-Kairosbench-Agent": "e", "Content-Type": "application/json"}) as r:
                assert r.status == 500
    rows = pd.read_parquet(tmp_path / "gateway.parquet")
    assert rows["http_status"].iloc[0] == 500 and rows["error"].iloc[0] == "upstream HTTP 500"
