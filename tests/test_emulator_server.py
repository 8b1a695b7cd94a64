"""The emulator's HTTP API on real loopback ports (in-process), plus the subprocess launcher."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import aiohttp
import pytest

from kairosbench.emulator.launch import EmulatorProcess, running_emulator
from kairosbench.emulator.textgen import VOCAB
from kairosbench.errors import UsageError
from kairosbench.tokenizer import chat_prompt_tokens

pytestmark = pytest.mark.timeout(60)

MODEL = "llama-3.1-8b"


@pytest.fixture
async def emu() -> AsyncIterator[tuple[list[str], aiohttp.ClientSession]]:
    async with running_emulator(2, model=MODEL, seed=7) as urls:
        async with aiohttp.ClientSession() as session:
            yield urls, session


async def _sse(resp: aiohttp.ClientResponse) -> list[Any]:
    events: list[Any] = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        events.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return events


def _words(n: int) -> str:
    return " ".join(VOCAB[i % 500] + "x" for i in range(n))


async def test_chat_stream_counts_tokens_exactly(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    messages = [{"role": "system", "content": _words(30)}, {"role": "user", "content": "hello there"}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 12, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    async with s.post(f"{urls[0]}/v1/chat/completions", json=body) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = await _sse(r)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert events[-2]["choices"] == []
    assert usage["prompt_tokens"] == chat_prompt_tokens(messages) == 37
    assert usage["completion_tokens"] == 12 and usage["total_tokens"] == 49
    chunks = events[:-2]
    assert len(chunks) == 12  # one chunk per token
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert len(text.split()) == 12


async def test_next_turn_hits_the_prefix_cache(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    msgs: list[dict[str, str]] = [{"role": "system", "content": _words(200)}, {"role": "user", "content": _words(50)}]
    async with s.post(f"{urls[1]}/v1/chat/completions", json={"messages": msgs, "max_tokens": 40, "ignore_eos": True}) as r:
        first = await r.json()
    reply = first["choices"][0]["message"]["content"]
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": _words(30)}]
    async with s.post(f"{urls[1]}/v1/chat/completions", json={"messages": msgs, "max_tokens": 5, "ignore_eos": True}, headers={"X-Kairosbench-Agent": "a1"}) as r:
        second = await r.json()
    prev_stream = first["usage"]["prompt_tokens"] + 40 - 1  # the last reply token has no KV yet
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == prev_stream // 16 * 16
    async with s.get(f"{urls[1]}/kairosbench/engine") as r:
        eng = await r.json()
    assert eng["prefix_hits_tokens"] == second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert eng["kv_used_blocks"] == 0 and eng["num_running"] == 0


async def test_completions_and_eos_rules(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    async with s.post(f"{urls[0]}/v1/completions", json={"prompt": "one two three", "max_tokens": 50}) as r:
        a = await r.json()
    async with s.post(f"{urls[0]}/v1/completions", json={"prompt": "one two three", "max_tokens": 50}) as r:
        b = await r.json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]  # deterministic
    n = a["usage"]["completion_tokens"]
    assert 1 <= n <= 50 and a["usage"]["prompt_tokens"] == 3
    assert a["choices"][0]["finish_reason"] == ("length" if n == 50 else "stop")
    async with s.post(f"{urls[0]}/v1/completions", json={"prompt": [1, 2, 3, 4], "max_tokens": 7, "min_tokens": 7}) as r:
        c = await r.json()
    assert c["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11, "prompt_tokens_details": {"cached_tokens": 0}}


@pytest.mark.parametrize(
    "path,body,status,param",
    [
        ("/v1/chat/completions", b"{not json", 400, None),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}, 404, "model"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}}, 400, "stream_options"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "min_tokens": 9}, 400, "min_tokens"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000_000}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt"),
        ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ],
)
async def test_bad_requests_get_openai_errors(emu, path, body, status, param) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    kw = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with s.post(urls[0] + path, **kw) as r:
        assert r.status == status
        err = (await r.json())["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"]


async def test_unknown_route_and_method_are_json_errors(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    async with s.get(f"{urls[0]}/v1/embeddings") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == 404
    async with s.get(f"{urls[0]}/v1/chat/completions") as r:
        assert r.status == 405 and "error" in await r.json()


async def test_models_health_and_metrics(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    async with s.get(f"{urls[0]}/v1/models") as r:
        models = await r.json()
    assert models["data"][0]["id"] == MODEL
    async with s.get(f"{urls[0]}/health") as r:
        assert r.status == 200
    async with s.post(f"{urls[0]}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True}) as r:
        await r.json()
    async with s.get(f"{urls[0]}/metrics") as r:
        text = await r.text()
    for name in (
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:num_preemptions_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_count",
        "vllm:e2e_request_latency_seconds_sum",
        "kairosbench:emulator_lag_seconds",
    ):
        assert f"\n{name}{{" in "\n" + text, name
    assert 'vllm:generation_tokens_total{engine="0",model_name="llama-3.1-8b"} 3' in text
    assert 'vllm:cache_config_info{block_size="16"' in text and "num_gpu_blocks=" in text


async def test_gpu_telemetry_and_clock_control(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    async with s.get(f"{urls[1]}/kairosbench/gpu") as r:
        g = await r.json()
    assert set(g) == {
        "gpu", "name", "t_ns", "power_w", "power_avg_w", "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct",
        "mem_util_pct", "mem_used_mib", "mem_total_mib", "temp_c", "throttle_reasons", "power_limit_w", "locked_clock_mhz",
        "supported_sm_clocks_mhz",
    }  # fmt: skip
    assert g["gpu"] == 1 and g["power_limit_w"] == 700.0 and g["locked_clock_mhz"] is None
    clocks = g["supported_sm_clocks_mhz"]
    assert len(clocks) == 110 and clocks[0] == 345 and clocks[-1] == 1980 and clocks == sorted(clocks)
    async with s.post(f"{urls[1]}/kairosbench/gpu/clocks", json={"sm_clock_mhz": 1001}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "sm_clock_mhz"
    async with s.post(f"{urls[1]}/kairosbench/gpu/clocks", json={"sm_clock_mhz": 990}) as r:
        assert r.status == 200 and await r.json() == {"locked_clock_mhz": 990}
    async with s.get(f"{urls[1]}/kairosbench/gpu") as r:
        assert (await r.json())["locked_clock_mhz"] == 990
    async with s.delete(f"{urls[1]}/kairosbench/gpu/clocks") as r:
        assert r.status == 200 and (await r.json())["locked_clock_mhz"] is None
    # energy counter is monotonic, samples are newer than since_us
    async with s.post(f"{urls[1]}/v1/completions", json={"prompt": _words(3000), "max_tokens": 20, "ignore_eos": True}) as r:
        await r.json()
    await asyncio.sleep(0.25)
    async with s.get(f"{urls[1]}/kairosbench/gpu") as r:
        g2 = await r.json()
    assert g2["energy_mj"] >= g["energy_mj"]
    async with s.get(f"{urls[1]}/kairosbench/gpu/samples", params={"since_us": "0"}) as r:
        samples = (await r.json())["samples"]
    assert samples and all(b["t_us"] - a["t_us"] == 20_000 for a, b in zip(samples, samples[1:]))
    cut = samples[len(samples) // 2]["t_us"]
    async with s.get(f"{urls[1]}/kairosbench/gpu/samples", params={"since_us": str(cut)}) as r:
        newer = (await r.json())["samples"]
    assert newer and all(x["t_us"] > cut for x in newer)
    async with s.get(f"{urls[1]}/kairosbench/gpu/samples", params={"since_us": "soon"}) as r:
        assert r.status == 400


async def test_power_limit_control(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    async with s.post(f"{urls[0]}/kairosbench/gpu/power_limit", json={"power_limit_w": 150}) as r:
        assert r.status == 400 and (await r.json())["error"]["param"] == "power_limit_w"
    async with s.post(f"{urls[0]}/kairosbench/gpu/power_limit", json={"power_limit_w": 450}) as r:
        assert await r.json() == {"power_limit_w": 450.0}
    async with s.get(f"{urls[0]}/kairosbench/gpu") as r:
        assert (await r.json())["power_limit_w"] == 450.0
    async with s.delete(f"{urls[0]}/kairosbench/gpu/power_limit") as r:
        assert await r.json() == {"power_limit_w": 700.0}


async def test_client_disconnect_frees_blocks(emu) -> None:  # type: ignore[no-untyped-def]
    urls, s = emu
    body = {"messages": [{"role": "user", "content": _words(2000)}], "max_tokens": 5000, "ignore_eos": True, "stream": True}
    async with s.post(f"{urls[0]}/v1/chat/completions", json=body) as r:
        await r.content.readline()  # first token arrived: the request holds KV blocks
        async with s.get(f"{urls[0]}/kairosbench/engine") as e:
            assert (await e.json())["kv_used_blocks"] > 0
        r.close()  # hang up mid-stream
    for _ in range(200):
        async with s.get(f"{urls[0]}/kairosbench/engine") as e:
            eng = await e.json()
        if eng["kv_used_blocks"] == 0:
            break
        await asyncio.sleep(0.02)
    assert eng["kv_used_blocks"] == 0 and eng["num_running"] == 0


async def test_unknown_preset_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown GPU preset"):
        async with running_emulator(gpu="a100"):
            pass


def test_emulator_process_starts_and_stops() -> None:
    proc = EmulatorProcess(2, model=MODEL)
    urls = proc.start(timeout_s=30)
    try:
        assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
        import urllib.request

        with urllib.request.urlopen(urls[1] + "/v1/models", timeout=5) as r:
            assert json.loads(r.read())["data"][0]["id"] == MODEL
        pid = proc.pid
        assert pid is not None
    finally:
        proc.stop()
    proc.stop()  # idempotent
    assert proc.pid is None


def test_public_api_names_resolve() -> None:
    import kairosbench.emulator as emu

    assert sorted(emu.__all__) == sorted(set(emu.__all__))
    for name in emu.__all__:
        assert getattr(emu, name) is not None


def test_emulate_on_a_busy_port_is_a_usage_error() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "kairosbench.cli", "emulate", "--port", str(port), "--quiet"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
