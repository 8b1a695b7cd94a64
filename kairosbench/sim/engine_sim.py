"""Virtual-time simulation of emulated engines serving agents from a Workload.

No sockets, no sleeps: engines (``kairosbench.emulator.engine.Engine``, one per instance) and
agents (``kairosbench.replay.flow.agent_flow``, one generator per session) advance on one
virtual clock, event by event. Minutes of agentic load simulate in seconds.

Building blocks (reusable by a policy layer such as ``kairosbench.sim.cluster``)::

    SessionStream   a session's token stream as prefix-block hashes. Each turn's prompt is the
                    previous prompt + reply + new tokens, so turn t+1 hashes its leading blocks
                    exactly as turn t did and the engine's prefix cache sees what it would see
                    in a real replay. Positions hash as (session, version, i); a context that
                    shrinks (condensation) bumps the version from the cut on. Optionally the first
                    ``shared_prefix_tokens`` hash per agent kind (a common system prompt).
    SimAgent        one session: its flow generator, stream, instance, current request, records.
    EngineSimulation  the event loop. Hooks to override:
        place(agent, t) -> int            instance for the agent's next turn (default: sticky
                                           round-robin at arrival, or per-turn round-robin)
        may_dispatch(agent, inst, t)      False holds the turn (retried on every completion and
                                           epoch via ``retry_held``)
        on_epoch(t)                       every ``epoch_s`` of virtual time (policy decisions,
                                           e.g. ``self.engines[i].set_clock(f, t)``)
        on_request_done(agent, rec, t)    after each finished turn

The loop: t = min(next engine step end, next agent wake-up, next epoch); engines complete
steps ending at t (finished requests resume their agents, which may send their next turn at
once), then agents due at t act, then the epoch hook runs. Engine API used:
``add_request / next_event_time / step_until / sync / set_clock`` (see ``emulator.engine``).

Power and clock time series come straight from each GPU's power trace, binned at
``series_bin_s``. Energy is the exact integral of the model's piecewise-constant power.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Any, Generator, Iterable, Sequence

from kairosbench.emulator.engine import Engine, EngineConfig, RequestTooLong
from kairosbench.emulator.request import EngineRequest
from kairosbench.replay.flow import FlowOptions, SendTurn, SessionOutcome, Step, TurnResult, Wait, agent_flow
from kairosbench.workload.model import Session, Workload

__all__ = [
    "SimConfig",
    "SessionStream",
    "SimAgent",
    "RequestRecord",
    "SessionRecord",
    "PowerBin",
    "SimResult",
    "EngineSimulation",
    "simulate",
]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate. ``clock_mhz``: one static lock for all instances, a list per instance,
    or None for the default governor."""

    gpu: str = "h100-sxm"
    model: str = "qwen3-coder-30b-a3b-fp8"
    n_instances: int = 1
    clock_mhz: int | None | Sequence[int | None] = None
    placement: str = "sticky"  # "sticky" (round-robin at arrival, then fixed) | "round-robin" (per turn)
    flow: FlowOptions = FlowOptions()
    engine: EngineConfig = EngineConfig(trace_bin_s=1.0, trace_keep_s=None, macro_steps=True)
    series_bin_s: float = 1.0
    duration_s: float | None = None  # stop at this virtual time (unfinished sessions are recorded)
    epoch_s: float | None = None  # call on_epoch every epoch_s (policy layers)
    shared_prefix_tokens: int = 0  # first N context tokens shared by all sessions of an agent kind


class SessionStream:
    """The block hashes of one session's growing context (see the module docstring)."""

    __slots__ = ("key", "kind", "block_size", "shared_tokens", "hashes", "valid", "version")

    def __init__(self, key: str, kind: str, block_size: int, shared_tokens: int = 0) -> None:
        self.key, self.kind, self.block_size, self.shared_tokens = key, kind, block_size, shared_tokens
        self.hashes: list[int] = []
        self.valid = 0  # tokens of context whose hashes are settled
        self.version = 0

    def prepare(self, prompt_len: int, appended: int, max_tokens: int) -> list[int]:
        """Hashes covering a request of ``prompt_len`` (carrying ``prompt_len - appended`` tokens
        of earlier context) that will generate ``max_tokens``. Returns the shared list."""
        bs = self.block_size
        keep = max(0, prompt_len - appended)
        if keep < self.valid:  # context shrank: content from the cut on is new
            self.version += 1
            del self.hashes[keep // bs :]
        need = (prompt_len + max_tokens) // bs
        h = self.hashes
        key, ver = self.key, self.version
        shared_blocks = self.shared_tokens // bs if ver == 0 else 0
        for i in range(len(h), need):
            h.append(hash(("__shared__", self.kind, i)) if i < shared_blocks else hash((key, ver, i)))
        self.valid = prompt_len
        return h

    def finished(self, prompt_len: int, output_tokens: int) -> None:
        self.valid = prompt_len + output_tokens


@dataclass(slots=True)
class RequestRecord:
    """One turn as the simulated engine served it. Times in seconds of virtual time."""

    session_id: str
    turn_index: int
    attempt: int
    instance: int
    t_submit_s: float
    t_first_token_s: float | None
    t_end_s: float | None
    prompt_tokens: int
    cached_tokens: int
    recomputed_tokens: int
    output_tokens: int
    preemptions: int
    status: str  # ok | too_long | unfinished

    @property
    def ttft_s(self) -> float | None:
        return None if self.t_first_token_s is None else self.t_first_token_s - self.t_submit_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.t_end_s is None else self.t_end_s - self.t_submit_s


@dataclass(slots=True)
class SessionRecord:
    """One agent. ``output_tok_s``: its output tokens over its time in the LLM (the KAIROS SLO)."""

    session_id: str
    agent_kind: str
    arrival_s: float
    start_s: float | None
    finish_s: float | None
    turns_done: int
    turns_total: int
    output_tokens: int
    llm_time_s: float
    status: str  # completed | abandoned | unfinished
    instance: int | None

    @property
    def output_tok_s(self) -> float | None:
        return self.output_tokens / self.llm_time_s if self.llm_time_s > 0 else None


@dataclass(frozen=True, slots=True)
class PowerBin:
    """One instance over ``[t_s, t_s + bin_s)``: mean power (W), cumulative energy at the bin end
    (J), time-weighted SM clock (MHz), kernel-busy fraction."""

    instance: int
    t_s: float
    power_w: float
    energy_j: float
    sm_clock_mhz: float
    busy_frac: float


class SimAgent:
    """One session being replayed: the flow generator plus where it stands."""

    __slots__ = ("session", "flow", "stream", "instance", "request", "send", "records", "llm_time_s", "output_tokens", "start_s", "outcome", "index", "held_since")

    def __init__(self, index: int, session: Session, flow: Generator[Step, TurnResult | None, SessionOutcome], stream: SessionStream) -> None:
        self.index = index
        self.session = session
        self.flow = flow
        self.stream = stream
        self.instance: int | None = None
        self.request: EngineRequest | None = None
        self.send: SendTurn | None = None
        self.records: list[RequestRecord] = []
        self.llm_time_s = 0.0
        self.output_tokens = 0
        self.start_s: float | None = None
        self.outcome: SessionOutcome | None = None
        self.held_since: float | None = None

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def context_tokens(self) -> int:
        """Tokens of context its next (or current) request carries, best estimate."""
        if self.send is not None:
            return self.send.expected_prompt_tokens
        return self.stream.valid


@dataclass(slots=True)
class SimResult:
    """Everything a simulation produced, plus summary numbers (``summary()``)."""

    config: SimConfig
    t_end_s: float
    requests: list[RequestRecord]
    sessions: list[SessionRecord]
    power: list[PowerBin]
    engines: list[dict[str, Any]]
    time_at_clock_s: dict[int, float]
    energy_j_per_instance: list[float]
    _summary: dict[str, Any] | None = field(default=None, repr=False)

    def summary(self, slo_tok_s: float = 20.0) -> dict[str, Any]:
        """Run-level numbers (units in the key names)."""
        if self._summary is not None and self._summary.get("slo_tok_s") == slo_tok_s:
            return self._summary
        dur = self.t_end_s
        done = [s for s in self.sessions if s.status == "completed"]
        rates = sorted(r for r in (s.output_tok_s for s in self.sessions if s.turns_done > 0) if r is not None)
        energy = sum(self.energy_j_per_instance)
        out_tokens = sum(r.output_tokens for r in self.requests if r.status == "ok")
        ttfts = sorted(x for x in (r.ttft_s for r in self.requests if r.status == "ok") if x is not None)
        queries = sum(int(e["prefix_queries_tokens"]) for e in self.engines)
        hits = sum(int(e["prefix_hits_tokens"]) for e in self.engines)
        s = {
            "duration_s": dur,
            "sessions_arrived": sum(1 for a in self.sessions if a.start_s is not None),
            "sessions_completed": len(done),
            "sessions_abandoned": sum(1 for a in self.sessions if a.status == "abandoned"),
            "requests_ok": sum(1 for r in self.requests if r.status == "ok"),
            "energy_j": energy,
            "avg_power_w": energy / dur if dur > 0 else 0.0,
            "energy_per_completed_agent_kj": energy / len(done) / 1e3 if done else math.inf,
            "output_tokens": out_tokens,
            "output_tok_s": out_tokens / dur if dur > 0 else 0.0,
            "job_throughput_per_h": len(done) / dur * 3600 if dur > 0 else 0.0,
            "agent_tok_s_mean": sum(rates) / len(rates) if rates else 0.0,
            "agent_tok_s_p5": _pct(rates, 0.05),
            "slo_tok_s": slo_tok_s,
            "slo_attainment": sum(1 for r in rates if r >= slo_tok_s) / len(rates) if rates else 0.0,
            "ttft_p50_s": _pct(ttfts, 0.5),
            "ttft_p99_s": _pct(ttfts, 0.99),
            "preemptions": sum(int(e["preemptions_total"]) for e in self.engines),
            "recomputed_tokens": sum(int(e["recomputed_tokens_total"]) for e in self.engines),
            "preempt_recompute_tokens": sum(int(e["preempt_recompute_tokens_total"]) for e in self.engines),
            "evicted_reprefill_tokens": sum(int(e["evicted_reprefill_tokens_total"]) for e in self.engines),
            "prefix_hit_rate": hits / queries if queries else 0.0,
            "mean_sm_clock_mhz": _mean_clock(self.time_at_clock_s),
        }
        self._summary = s
        return s

    def frames(self) -> dict[str, Any]:
        """pandas DataFrames: requests, sessions, power (one row per record)."""
        import pandas as pd

        def rows(items: Iterable[Any]) -> list[dict[str, Any]]:
            return [{k: getattr(x, k) for k in x.__slots__} for x in items]

        req = pd.DataFrame(rows(self.requests))
        if len(req):
            req["ttft_s"] = req["t_first_token_s"] - req["t_submit_s"]
            req["e2e_s"] = req["t_end_s"] - req["t_submit_s"]
        ses = pd.DataFrame(rows(self.sessions))
        if len(ses):
            ses["output_tok_s"] = ses["output_tokens"] / ses["llm_time_s"].where(ses["llm_time_s"] > 0)
        pw = pd.DataFrame(rows(self.power))
        return {"requests": req, "sessions": ses, "power": pw}


_MAX_IDLE_EPOCHS = 10_000  # held agents, idle engines, no arrivals: give the policy this many epochs


def _pct(sorted_vals: Sequence[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(math.floor(q * (len(sorted_vals) - 1) + 0.5))))
    return float(sorted_vals[k])


def _mean_clock(t_at: dict[int, float]) -> float:
    tot = sum(t_at.values())
    return sum(f * t for f, t in t_at.items()) / tot if tot else 0.0


class EngineSimulation:
    """The event loop over engines and agents (subclass to add a policy; see module docstring)."""

    def __init__(self, workload: Workload | Iterable[Session], config: SimConfig = SimConfig(), *, engines: list[Engine] | None = None) -> None:
        self.config = config
        sessions = list(workload.sessions if isinstance(workload, Workload) else workload)
        ecfg = replace(config.engine, trace_bin_s=config.series_bin_s, trace_keep_s=None)
        self.engines = engines or [Engine(config.gpu, config.model, ecfg, index=i) for i in range(config.n_instances)]
        clocks = config.clock_mhz
        per: list[int | None] = list(clocks) if isinstance(clocks, (list, tuple)) else [clocks] * len(self.engines)  # type: ignore[list-item]
        if len(per) != len(self.engines):
            raise ValueError(f"clock_mhz has {len(per)} entries for {len(self.engines)} instances")
        for eng, f in zip(self.engines, per):
            if f is not None:
                eng.set_clock(int(f), 0.0, immediate=True)  # a static clock is in force from t=0
        bs = self.engines[0].layout.block_size
        self.agents = [
            SimAgent(i, s, agent_flow(s, config.flow), SessionStream(s.session_id, s.agent_kind, bs, config.shared_prefix_tokens))
            for i, s in enumerate(sessions)
        ]
        self.requests: list[RequestRecord] = []
        self.held: list[SimAgent] = []
        self.now = 0.0
        self._heap: list[tuple[float, int, SimAgent]] = []
        self._seq = 0
        self._rr = 0
        self._req_ids = 0

    # ---- hooks ---------------------------------------------------------------------------------
    def place(self, agent: SimAgent, t: float) -> int:
        n = len(self.engines)
        if self.config.placement == "round-robin" or agent.instance is None:
            i = self._rr % n
            self._rr += 1
            return i
        return agent.instance

    def may_dispatch(self, agent: SimAgent, instance: int, t: float) -> bool:
        return True

    def on_epoch(self, t: float) -> None:
        pass

    def on_request_done(self, agent: SimAgent, rec: RequestRecord, t: float) -> None:
        pass

    # ---- mechanics -----------------------------------------------------------------------------
    def _schedule(self, agent: SimAgent, t: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, agent))

    def _advance_agent(self, agent: SimAgent, value: TurnResult | None, t: float) -> None:
        """Feed the flow and act on what it yields until it waits or sends."""
        try:
            step = agent.flow.send(value)
        except StopIteration as stop:
            agent.outcome = stop.value
            agent.send = None
            if agent.instance is not None:
                self.engines[agent.instance].forget_stream(agent.session_id)
            return
        self._act(agent, step, t)

    def _act(self, agent: SimAgent, step: Step, t: float) -> None:
        if isinstance(step, Wait):
            agent.send = None
            self._schedule(agent, max(t, step.until_s))
        else:
            agent.send = step
            self._dispatch(agent, t)

    def _dispatch(self, agent: SimAgent, t: float) -> None:
        step = agent.send
        assert step is not None
        inst = self.place(agent, t)
        if not self.may_dispatch(agent, inst, t):
            if agent.held_since is None:
                agent.held_since = t
                self.held.append(agent)
            return
        agent.held_since = None
        if agent.instance is not None and agent.instance != inst:
            self.engines[agent.instance].forget_stream(agent.session_id)
        agent.instance = inst
        if agent.start_s is None:
            agent.start_s = t
        hashes = agent.stream.prepare(step.expected_prompt_tokens, step.appended_tokens, step.max_tokens)
        self._req_ids += 1
        req = EngineRequest(self._req_ids, step.expected_prompt_tokens, step.max_tokens, hashes, stream_key=agent.session_id, payload=agent)
        eng = self.engines[inst]
        try:
            eng.add_request(req, t)
        except RequestTooLong as exc:
            rec = RequestRecord(agent.session_id, step.turn_index, step.attempt, inst, t, None, t, step.expected_prompt_tokens, 0, 0, 0, 0, "too_long")
            self.requests.append(rec)
            agent.records.append(rec)
            self._advance_agent(agent, TurnResult(ok=False, finished_at_s=t, retryable=False, error=f"too_long: {exc}"), t)
            return
        agent.request = req

    def retry_held(self, t: float) -> None:
        """Try every held turn again (FIFO), e.g. after a completion or a policy change."""
        if not self.held:
            return
        held, self.held = self.held, []
        for agent in held:
            agent.held_since = None
            if agent.send is not None and agent.request is None:
                self._dispatch(agent, t)

    def _finish_request(self, req: EngineRequest, t: float) -> None:
        agent: SimAgent = req.payload
        step = agent.send
        assert step is not None and agent.instance is not None
        rec = RequestRecord(
            agent.session_id,
            step.turn_index,
            step.attempt,
            agent.instance,
            req.arrival_s,
            req.first_token_s,
            req.finish_s,
            req.prompt_len,
            req.cached_tokens,
            req.recomputed_tokens,
            req.num_output,
            req.preemptions,
            "ok",
        )
        self.requests.append(rec)
        agent.records.append(rec)
        agent.llm_time_s += t - req.arrival_s
        agent.output_tokens += req.num_output
        agent.request = None
        agent.stream.finished(req.prompt_len, req.num_output)
        self.on_request_done(agent, rec, t)
        self._advance_agent(agent, TurnResult(ok=True, finished_at_s=t, output_tokens=req.num_output), t)

    def run(self) -> SimResult:
        cfg = self.config
        for agent in self.agents:
            first = next(agent.flow)
            self._act(agent, first, 0.0)
        horizon = cfg.duration_s if cfg.duration_s is not None else math.inf
        next_epoch = cfg.epoch_s if cfg.epoch_s else math.inf
        engines = self.engines
        heap = self._heap
        idle_epochs = 0
        while True:
            t_eng = math.inf
            for e in engines:
                x = e.next_event_time()
                if x is not None and x < t_eng:
                    t_eng = x
            t_agent = heap[0][0] if heap else math.inf
            t = min(t_eng, t_agent, next_epoch)
            if t == math.inf or t > horizon:
                break
            if t_eng == math.inf and t_agent == math.inf:
                # only epochs left: stop unless held agents may still be released by the policy
                idle_epochs = idle_epochs + 1 if self.held else _MAX_IDLE_EPOCHS
                if idle_epochs >= _MAX_IDLE_EPOCHS:
                    break
            else:
                idle_epochs = 0
            self.now = t
            completed = False
            outside = min(t_agent, next_epoch)  # when agents or the policy may act next
            for e in engines:
                x = e.next_event_time()
                if x is not None and x <= t:
                    e.run_horizon_s = outside
                    for out in e.step_until(t):
                        for req in out.finished:
                            if req.payload is not None and req.finish_s is not None:
                                self._finish_request(req, out.t_end)
                                completed = True
            while heap and heap[0][0] <= t:
                _, _, agent = heapq.heappop(heap)
                self._advance_agent(agent, None, t)
            if completed and self.held:
                self.retry_held(t)
            if t >= next_epoch:
                self.on_epoch(t)
                self.retry_held(t)
                next_epoch += cfg.epoch_s  # type: ignore[operator]
        t_end = horizon if horizon != math.inf else self.now
        for e in engines:
            e.step_until(t_end)
            e.sync(t_end)
        return self._result(t_end)

    def _result(self, t_end: float) -> SimResult:
        sessions: list[SessionRecord] = []
        for a in self.agents:
            if a.outcome is not None:
                status = a.outcome.status
                finish = a.records[-1].t_end_s if a.records else None
                turns_done = a.outcome.turns_done
            else:
                status, finish, turns_done = "unfinished", None, sum(1 for r in a.records if r.status == "ok")
            sessions.append(
                SessionRecord(a.session_id, a.session.agent_kind, a.session.arrival_s * self.config.flow.time_scale, a.start_s, finish, turns_done, len(a.session.turns), a.output_tokens, a.llm_time_s, status, a.instance)
            )
            if a.request is not None:  # still in an engine at the horizon
                r = a.request
                assert a.send is not None
                self.requests.append(
                    RequestRecord(a.session_id, a.send.turn_index, a.send.attempt, a.instance or 0, r.arrival_s, r.first_token_s, None, r.prompt_len, r.cached_tokens, r.recomputed_tokens, r.num_output, r.preemptions, "unfinished")
                )
        power: list[PowerBin] = []
        t_at: dict[int, float] = {}
        energies = []
        for e in self.engines:
            tr = e.gpu.trace
            bw = tr.bin_s
            n_bins = int(math.ceil(t_end / bw - 1e-9))
            cum = 0.0
            for k in range(n_bins):
                j = k - tr.base
                if j < 0 or j >= len(tr.energy):
                    continue
                span = min(bw, t_end - k * bw)
                if span <= 0:
                    continue
                en = tr.energy[j]
                cum += en
                power.append(PowerBin(e.index, k * bw, en / span, cum, tr.clock[j] / span, tr.busy[j] / span))
            energies.append(cum)  # to within one step that straddles the horizon
            for f, s in e.gpu.time_at_clock_s.items():
                t_at[f] = t_at.get(f, 0.0) + s
        return SimResult(
            config=self.config,
            t_end_s=t_end,
            requests=self.requests,
            sessions=sessions,
            power=power,
            engines=[e.engine_info() for e in self.engines],
            time_at_clock_s=t_at,
            energy_j_per_instance=energies,
        )


def simulate(workload: Workload | Iterable[Session], config: SimConfig = SimConfig()) -> SimResult:
    """Run one simulation to completion (or ``config.duration_s``)."""
    return EngineSimulation(workload, config).run()
