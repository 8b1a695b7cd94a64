"""One continuous-batching engine on one emulated GPU, advanced step by step on a given clock.

No asyncio, no ``time`` in here: the same object runs under the real-time server
(``realtime.py``, which feeds it wall-clock seconds and measures how late it runs) and under
the virtual-time simulator (``kairosbench.sim.engine_sim``). The driver contract::

    eng = Engine("h100-sxm", "qwen3-coder-30b-a3b-fp8")
    eng.add_request(req, t)            # t never goes backwards; requests added at the same
    eng.add_request(req2, t)           #   t are batched into the same first step
    t_next = eng.next_event_time()     # end of the step in flight / pending start / None (idle)
    outs = eng.step_until(t_next)      # completes every step ending <= t; StepOutput list
    eng.sync(t)                        # idle: extend the power trace to t (before readings)

A step is planned when the previous one ends (or, from idle, at the arrival that woke the
engine): the scheduler picks the batch, the roofline gives its time at the requested clock,
the GPU's power governor throttles the clock to the board limit, and the step's tokens are
emitted at its end time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kairosbench.emulator.gpu import EmulatedGpu, GpuReading, StepRun
from kairosbench.emulator.kvcache import KVCache
from kairosbench.emulator.power import StepPower
from kairosbench.emulator.presets import CacheLayout, GpuPreset, ModelPreset, cache_layout, gpu_preset, model_preset
from kairosbench.emulator.request import EngineRequest, RequestState
from kairosbench.emulator.roofline import Roofline, RooflineParams
from kairosbench.emulator.scheduler import Batch, Scheduler, SchedulerStats

__all__ = ["Engine", "EngineConfig", "StepOutput", "RequestTooLong"]


class RequestTooLong(ValueError):
    """prompt + max_tokens exceeds max_model_len (vLLM answers 400)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """vLLM-like engine settings. Defaults are vLLM's ([doc] EngineArgs) unless noted."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192  # chunked-prefill token budget per step
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    kv_capacity_tokens: int | None = None  # override the preset arithmetic
    enable_prefix_caching: bool = True
    roofline: RooflineParams = field(default_factory=RooflineParams)
    clock_settle_s: float = 0.05  # [proposal] ANCHORS §3.4: 10-100 ms
    trace_bin_s: float = 0.02  # power trace resolution = NVML's 20 ms sample buffer
    trace_keep_s: float | None = 60.0  # None: keep the whole run (simulator series)
    # Simulator fast path: run stretches of pure-decode steps as one event (exactly the same
    # model, fewer Python round trips). Off for the live server, which streams every token.
    macro_steps: bool = False
    max_macro_steps: int = 512


@dataclass(slots=True)
class StepOutput:
    """What one finished step produced. ``tokens``: requests that got one token at ``t_end``."""

    t_start: float
    t_end: float
    power: StepPower
    num_scheduled: int
    prefill_tokens: int
    tokens: list[EngineRequest]
    finished: list[EngineRequest]
    preempted: list[EngineRequest]
    steps: int = 1  # > 1: a run of pure-decode steps; each request in ``tokens`` got this many


class Engine:
    """Scheduler + KV cache + roofline + GPU, on an externally supplied clock (seconds)."""

    def __init__(
        self,
        gpu: GpuPreset | str = "h100-sxm",
        model: ModelPreset | str = "qwen3-coder-30b-a3b-fp8",
        config: EngineConfig = EngineConfig(),
        *,
        index: int = 0,
    ) -> None:
        self.gpu_preset = gpu_preset(gpu) if isinstance(gpu, str) else gpu
        self.model = model_preset(model) if isinstance(model, str) else model
        self.config = config
        self.index = index
        self.layout: CacheLayout = cache_layout(
            self.gpu_preset,
            self.model,
            gpu_memory_utilization=config.gpu_memory_utilization,
            block_size=config.block_size,
            kv_capacity_tokens=config.kv_capacity_tokens,
        )
        self.kv = KVCache(self.layout.num_gpu_blocks, config.block_size, enable_prefix_caching=config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens)
        self.roofline = Roofline(self.gpu_preset, self.model, config.roofline)
        self.gpu = EmulatedGpu(
            self.gpu_preset,
            index=index,
            trace_bin_s=config.trace_bin_s,
            keep_s=config.trace_keep_s,
            clock_settle_s=config.clock_settle_s,
        )
        self._now = 0.0
        self._inflight: Batch | None = None
        self._inflight_start = 0.0
        self._inflight_end = 0.0
        self._inflight_power: StepPower | None = None
        self._pending_start: float | None = None
        self._run: StepRun | None = None  # a planned run of decode steps (simulator fast path)
        self._run_ends: np.ndarray | None = None  # its per-step end times
        # The next time something outside may act on this engine (the simulator sets it before
        # stepping): decode runs are planned up to the step in flight then. Only an
        # optimisation: an earlier outside event cuts the run exactly (``_cut_run``).
        self.run_horizon_s = math.inf
        self._buffer: list[StepOutput] = []
        self.busy_s = 0.0

    # ---- properties --------------------------------------------------------------------------
    @property
    def now_s(self) -> float:
        return self._now

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def kv_usage(self) -> float:
        return self.kv.usage

    @property
    def max_model_len(self) -> int:
        return self.layout.max_model_len

    @property
    def idle(self) -> bool:
        return self._inflight is None and self._pending_start is None

    @property
    def has_work(self) -> bool:
        return bool(self.scheduler.running or self.scheduler.waiting or self._inflight is not None)

    # ---- driver API ----------------------------------------------------------------------------
    def add_request(self, req: EngineRequest, t_s: float) -> None:
        """Queue ``req`` arriving at ``t_s`` (>= the engine's time)."""
        if req.prompt_len + req.max_tokens > self.layout.max_model_len:
            raise RequestTooLong(
                f"This model's maximum context length is {self.layout.max_model_len} tokens. However, you "
                f"requested {req.prompt_len + req.max_tokens} tokens ({req.prompt_len} in the messages, "
                f"{req.max_tokens} in the completion). Please reduce the length of the messages or completion."
            )
        t_s = max(t_s, self._now)
        self._advance(t_s, plan_before=True)
        self._cut_run(t_s)
        req.arrival_s = t_s
        self.scheduler.add(req)
        if self._inflight is None and self._pending_start is None:
            self._pending_start = t_s

    def abort(self, req: EngineRequest, t_s: float) -> None:
        """Drop ``req`` (client went away): its blocks are freed now or at the current step's end."""
        t_s = max(t_s, self._now)
        self._advance(t_s, plan_before=True)
        self._cut_run(t_s)
        if self.scheduler.abort(req) and self._inflight is None and not self.has_work:
            self._pending_start = None

    def next_event_time(self) -> float | None:
        """When ``step_until`` has something to do next; None when idle with nothing queued."""
        if self._buffer:
            return self._now
        if self._inflight is not None:
            return self._inflight_end
        return self._pending_start

    def step_until(self, t_s: float) -> list[StepOutput]:
        """Complete every step ending at or before ``t_s`` (planning the next ones as they go)."""
        self._advance(t_s, plan_before=False)
        out, self._buffer = self._buffer, []
        return out

    def sync(self, t_s: float) -> None:
        """Bring the power trace up to ``t_s`` if the GPU is idle (call before telemetry reads)."""
        if self._inflight is None and self._pending_start is None and t_s > self._now:
            self._now = t_s
        if self._inflight is None and self._pending_start is None:
            self.gpu.fill_idle(t_s)

    def gpu_reading(self, t_s: float) -> GpuReading:
        self.sync(t_s)
        return self.gpu.reading(t_s)

    def set_clock(self, f_mhz: int | None, t_s: float, *, immediate: bool = False) -> None:
        """Lock the SM clock (a supported value) or reset it (None). The change reaches steps
        that start ``clock_settle_s`` later, or at once with ``immediate`` (static setups)."""
        t_s = max(t_s, self._now)
        self._advance(t_s, plan_before=True)
        self._cut_run(t_s)
        if f_mhz is None:
            self.gpu.reset_clock(t_s, immediate=immediate)
        else:
            self.gpu.lock_clock(f_mhz, t_s, immediate=immediate)

    def forget_stream(self, stream_key: object) -> None:
        self.scheduler.forget_stream(stream_key)

    # ---- internals -----------------------------------------------------------------------------
    def _advance(self, t_s: float, *, plan_before: bool) -> None:
        """Run the model forward to ``t_s``. ``plan_before``: a pending idle start strictly before
        ``t_s`` is planned (a new arrival at ``t_s`` must not join a step that began earlier);
        a pending start exactly at ``t_s`` waits so simultaneous arrivals batch together."""
        while True:
            if self._inflight is not None:
                if self._inflight_end <= t_s:
                    end = self._inflight_end
                    self._complete(end)
                    self._now = max(self._now, end)
                    self._plan(end)
                    continue
                break
            ps = self._pending_start
            if ps is not None and (ps < t_s or (not plan_before and ps <= t_s)):
                self._pending_start = None
                self._plan(ps)
                continue
            break
        if t_s > self._now:
            self._now = t_s

    def _plan(self, t0: float) -> None:
        sched = self.scheduler
        if not (sched.running or sched.waiting):
            self._inflight = None
            return
        batch = sched.schedule()
        if not batch.reqs:
            # Cannot happen while prompt + max_tokens <= max_model_len <= KV capacity (checked in
            # add_request): some request always fits once all others are preempted.
            raise RuntimeError(f"scheduler made no progress: {len(sched.running)} running, {len(sched.waiting)} waiting")
        self._inflight = batch
        self._inflight_start = t0
        cfg = self.config
        k = 1
        if cfg.macro_steps and not self.gpu.change_pending:
            k = sched.decode_run_length(batch, cfg.max_macro_steps)
        if k > 1:
            run = self.gpu.run_decode(self.roofline.decode_run(batch.work, k), t0, self.run_horizon_s)
            ends = t0 + np.cumsum(run.durations)
            if len(ends) > 1:
                self._run, self._run_ends = run, ends
                self._inflight_end = float(ends[-1])
                self._inflight_power = run.aggregate()
                self.busy_s += self._inflight_end - t0
                return
            # the horizon left a single step: plan it as one (identical numbers)
            self._inflight_end = float(ends[0])
            self._inflight_power = run.aggregate()
            self.busy_s += self._inflight_end - t0
            return
        sp = self.gpu.run_step(self.roofline.cost(batch.work), t0)
        self._inflight_end = t0 + sp.duration_s
        self._inflight_power = sp
        self.busy_s += sp.duration_s

    def _cut_run(self, t_s: float) -> None:
        """An outside event at ``t_s`` (arrival, abort, clock change) ends a planned decode run
        after the step in flight at ``t_s``, exactly where single steps would let it act."""
        ends = self._run_ends
        if ends is None or self._inflight is None or self._run is None:
            return
        keep = int(np.searchsorted(ends, t_s, side="right")) + 1
        if keep >= len(ends):
            return
        self.gpu.truncate_run(self._inflight_start, self._run, keep)
        self.busy_s -= float(ends[-1] - ends[keep - 1])
        self._run_ends = ends = ends[:keep]
        self._inflight_end = float(ends[-1])
        self._inflight_power = self._run.aggregate()

    def _complete(self, t_end: float) -> None:
        batch = self._inflight
        assert batch is not None and self._inflight_power is not None
        k = 1
        if self._run_ends is not None:
            k = len(self._run_ends)
            self._run_ends = self._run = None
        got, done = self.scheduler.complete_run(batch, k, t_end)
        self._buffer.append(
            StepOutput(
                t_start=self._inflight_start,
                t_end=t_end,
                power=self._inflight_power,
                num_scheduled=len(batch.reqs),
                prefill_tokens=batch.work.prefill_tokens,
                tokens=got,
                finished=done,
                preempted=batch.preempted,
                steps=k,
            )
        )
        self._inflight = None
        self._inflight_power = None

    # ---- readings ------------------------------------------------------------------------------
    def engine_info(self) -> dict[str, object]:
        """The ``GET /kairosbench/engine`` body (minus ``lag_s``, which the driver knows)."""
        st = self.scheduler.stats
        return {
            "kv_capacity_tokens": self.layout.kv_capacity_tokens,
            "block_size": self.layout.block_size,
            "num_gpu_blocks": self.layout.num_gpu_blocks,
            "kv_used_blocks": self.kv.num_used,
            "num_running": len(self.scheduler.running),
            "num_waiting": len(self.scheduler.waiting),
            "preemptions_total": st.preemptions,
            "recomputed_tokens_total": st.recomputed_tokens,
            "prefix_queries_tokens": st.prefix_queries_tokens,
            "prefix_hits_tokens": st.prefix_hits_tokens,
            "model": self.model.name,
            "gpu_preset": self.gpu_preset.name,
            # extensions (not in the contract; harmless extra keys)
            "preempt_recompute_tokens_total": st.preempt_recompute_tokens,
            "evicted_reprefill_tokens_total": st.evicted_reprefill_tokens,
            "max_model_len": self.layout.max_model_len,
        }

    def request_counts(self) -> dict[RequestState, int]:
        s = self.scheduler
        return {RequestState.RUNNING: len(s.running), RequestState.WAITING: len(s.waiting)}
