"""The endpoint and prompt builder for a Locust process: model discovery, tokenizer, ``run_sync``.

The prompt builder (``kairosbench.replay.prompt``) and the token models are written for asyncio
(``async def``), because a remote ``/tokenize`` call or a long Hugging Face encode must not
block the aiohttp driver's event loop. Under gevent there is no event loop, but there is no
need for one either: with a token model whose ``count`` never awaits anything, those
coroutines never suspend, and ``run_sync`` runs them to completion in one ``send``. So the
Locust user calls the *same* prompt builder, and the history it resends and the prompt sizes
are identical to ``kairosbench run``'s. What keeps every ``count`` free of real awaits:

- ``emulator`` and ``words``: plain arithmetic;
- ``remote``: ``/tokenize`` is POSTed with the gevent client inside the coroutine (blocking
  the greenlet, which gevent turns into a cooperative wait);
- a tokenizer directory: ``GeventHFTokenModel`` counts inline, where ``HFTokenModel`` hands
  texts over 20,000 characters to a thread with ``asyncio.to_thread``.

``run_sync`` raises if a coroutine does suspend, naming the culprit, instead of hanging.
"""

from __future__ import annotations

import logging
from typing import Any, Coroutine, TypeVar

from kairosbench.errors import EndpointError, UsageError
from kairosbench.locust.client import GeventStreamClient
from kairosbench.replay.tokens import EmulatorTokenModel, HFTokenModel, RemoteTokenModel, TokenModel, WordsTokenModel

__all__ = ["run_sync", "GeventHFTokenModel", "discover_model", "is_emulator", "select_token_model"]

T = TypeVar("T")
log = logging.getLogger("kairosbench.locust")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that completes without suspending; raise if it tries to suspend."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError(f"{getattr(coro, '__qualname__', coro)} awaited an event-loop future; the Locust driver has no event loop")


class GeventHFTokenModel(HFTokenModel):
    """A Hugging Face tokenizer that always counts inline (no ``asyncio.to_thread``)."""

    async def count(self, text: str) -> int:
        return self._n(text)


def discover_model(client: GeventStreamClient, base_url: str) -> str:
    """The first model of ``GET /v1/models``."""
    try:
        data = client.request_json("GET", f"{base_url}/v1/models", timeout_s=15.0)
    except EndpointError as exc:
        raise EndpointError(f"{exc}. Is the server up? Pass --model to skip model discovery.") from None
    models = data.get("data") if isinstance(data, dict) else None
    if not models or not isinstance(models[0], dict) or "id" not in models[0]:
        raise EndpointError(f"{base_url}/v1/models listed no model; pass --model NAME")
    return str(models[0]["id"])


def is_emulator(client: GeventStreamClient, base_url: str) -> bool:
    """Whether ``base_url`` is a kairosbench emulator (its tokenizer is then exact)."""
    try:
        info = client.request_json("GET", f"{base_url}/kairosbench/engine", timeout_s=5.0)
    except EndpointError:
        return False
    return isinstance(info, dict) and "kv_capacity_tokens" in info


def select_token_model(choice: str, client: GeventStreamClient, base_url: str, model: str) -> TokenModel:
    """The tokenizer for the endpoint, as ``kairosbench run --tokenizer`` chooses it."""
    if choice == "emulator" or (choice == "auto" and is_emulator(client, base_url)):
        return EmulatorTokenModel()
    if choice == "words":
        return WordsTokenModel()
    if choice in ("remote", "auto"):

        async def post_json(url: str, payload: dict[str, Any]) -> dict[str, Any]:
            return client.request_json("POST", url, payload)  # type: ignore[no-any-return]

        remote = RemoteTokenModel(base_url, model, post_json)
        try:
            run_sync(remote.setup())
            return remote
        except EndpointError as exc:
            if choice == "remote":
                raise
            log.warning("%s: no usable /tokenize route (%s); estimating 1 token per word, corrected by usage", base_url, exc)
            return WordsTokenModel()
    try:
        return GeventHFTokenModel(choice)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare exceptions on bad files
        raise UsageError(f"--tokenizer {choice}: {exc}") from exc
