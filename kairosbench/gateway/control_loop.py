"""The control epoch: telemetry in, ``policy.decide`` on a snapshot, clocks and caps out, all logged.

Every ``epoch_s`` (default 1 s; ANCHORS §6 suggests 1-2 s, ≥ 10x the 100 ms NVML update):

1. read every instance's telemetry concurrently (a failed read keeps the last numbers, marked);
2. expire agents idle past the timeout, build the snapshot from tracker + telemetry;
3. ``policy.decide(snapshot)``; install the caps in the tracker;
4. apply each clock through its actuator (idempotent: a change only when it differs);
5. release whatever the new caps allow (the proxy dispatches those requests);
6. write one control.parquet row per instance with the inputs and the decision.

Epochs are scheduled on absolute deadlines (t0 + n·epoch_s), so a slow epoch does not shift
the later ones; a missed deadline is skipped, not queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from controllers.base import Policy
from controllers.snapshot import Actions, AgentPhase, Snapshot
from controllers.stats import percentile
from kairosbench.clock import now_ns
from kairosbench.errors import ActuatorError
from kairosbench.gateway.actuators import ClockActuator
from kairosbench.gateway.control_log import ControlLog, RequestLog
from kairosbench.gateway.telemetry import TelemetrySource
from kairosbench.gateway.tracker import AgentTracker, Dispatch, TrackerCounters

__all__ = ["GatewayInstance", "ControlLoop", "decision_rows"]

log = logging.getLogger("kairosbench.gateway")


@dataclass
class GatewayInstance:
    """One upstream endpoint: where to forward, how to read it, how to set its clock."""

    instance_id: str
    endpoint: str
    root: str
    telemetry: TelemetrySource
    actuator: ClockActuator


def decision_rows(
    snap: Snapshot,
    actions: Actions,
    *,
    t_ns: int,
    policy: str,
    endpoints: dict[str, str],
    telemetry_kind: dict[str, str],
    pending_agents: int,
    counters: TrackerCounters,
    applied: dict[str, tuple[bool, str | None, str]] | None = None,
    decide_s: float = 0.0,
    released: int = 0,
    energy_j: dict[str, float | None] | None = None,
) -> list[dict[str, Any]]:
    """One control.parquet row per instance (pure; the simulator writes the same rows).

    ``applied[instance_id]`` = (changed?, error or None, actuator kind).
    """
    clocks = {c.instance_id: c for c in actions.clocks}
    caps = {c.instance_id: c for c in actions.caps}
    rates: dict[str, list[float]] = {}
    for a in snap.agents:
        if a.instance_id is not None and a.phase is not AgentPhase.DONE and a.output_tok_s is not None:
            rates.setdefault(a.instance_id, []).append(a.output_tok_s)
    rows = []
    for inst in snap.instances:
        k = inst.instance_id
        sc = clocks.get(k)
        no_table = inst.supported_clocks_mhz in ((), (0,))
        action = "none" if no_table else ("keep" if sc is None else ("reset" if sc.sm_clock_mhz is None else "lock"))
        cap = caps.get(k, inst.cap)
        changed, err, kind = (applied or {}).get(k, (False, None, ""))
        r = rates.get(k, [])
        rows.append(
            {
                "t_ns": t_ns,
                "epoch": snap.epoch,
                "policy": policy,
                "instance_id": k,
                "endpoint": endpoints.get(k, ""),
                "telemetry": telemetry_kind.get(k, ""),
                "telemetry_ok": inst.telemetry_ok,
                "sm_clock_mhz": inst.sm_clock_mhz,
                "locked_clock_mhz": inst.locked_clock_mhz,
                "power_w": inst.power_w,
                "energy_j": (energy_j or {}).get(k),
                "gpu_util_frac": inst.gpu_util_frac,
                "kv_capacity_tokens": inst.kv_capacity_tokens,
                "kv_usage_frac": inst.kv_usage_frac,
                "resident_context_tokens": inst.resident_context_tokens,
                "context_frac": inst.context_frac,
                "resident_agents": inst.resident_agents,
                "held_agents": inst.held_agents,
                "held_context_tokens": inst.held_context_tokens,
                "pending_agents": pending_agents,
                "num_running": inst.num_running,
                "num_waiting": inst.num_waiting,
                "preemptions_total": inst.preemptions_total,
                "recomputed_tokens_total": inst.recomputed_tokens_total,
                "prefix_queries_tokens": inst.prefix_queries_tokens,
                "prefix_hits_tokens": inst.prefix_hits_tokens,
                "agents_with_rate": len(r),
                "p5_agent_tok_s": percentile(r, 5),
                "clock_action": action,
                "target_clock_mhz": sc.sm_clock_mhz if (sc is not None and not no_table) else None,
                "clock_changed": changed,
                "actuator": kind,
                "actuator_error": err,
                "cap_admit_below_tokens": cap.admit_below_tokens if cap else None,
                "cap_hold_above_tokens": cap.hold_above_tokens if cap else None,
                "cap_max_agents": cap.max_agents if cap else None,
                "note": actions.notes.get(k, ""),
                "decide_s": decide_s,
                "migrations_total": counters.migrations,
                "turns_held_total": counters.turns_held,
                "released": released,
            }
        )
    return rows


class ControlLoop:
    """Runs the policy every epoch against live instances."""

    def __init__(
        self,
        tracker: AgentTracker,
        policy: Policy,
        instances: list[GatewayInstance],
        *,
        epoch_s: float,
        run_clock_s: Callable[[], float],
        on_release: Callable[[list[Dispatch]], None],
        log_: ControlLog | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        if epoch_s <= 0:
            raise ValueError("epoch_s must be positive")
        self.tracker, self.policy, self.instances = tracker, policy, instances
        self.epoch_s = epoch_s
        self.run_clock_s = run_clock_s
        self.on_release = on_release
        self.log = log_
        self.request_log = request_log
        self.epoch = 0
        self.actuator_errors = 0
        self.last_actions: Actions | None = None

    async def step(self) -> Actions:
        """One epoch (also what tests call directly)."""
        readings = await asyncio.gather(*(i.telemetry.read() for i in self.instances))
        for inst, tel in zip(self.instances, readings):
            self.tracker.update_telemetry(inst.instance_id, tel)
        t_s = self.run_clock_s()
        self.tracker.expire_idle(t_s)
        snap = self.tracker.snapshot(t_s, self.epoch)
        t0 = time.perf_counter()
        actions = self.policy.decide(snap)
        decide_s = time.perf_counter() - t0
        self.tracker.set_caps(actions.caps)
        applied = await self._apply_clocks(snap, actions)
        released = self.tracker.release(self.run_clock_s())
        if released:
            self.on_release(released)
        if self.log is not None:
            self.log.append(
                decision_rows(
                    snap,
                    actions,
                    t_ns=now_ns(),
                    policy=self.policy.name,
                    endpoints={i.instance_id: i.endpoint for i in self.instances},
                    telemetry_kind={i.instance_id: i.telemetry.kind for i in self.instances},
                    pending_agents=self.tracker.pending_count,
                    counters=self.tracker.counters,
                    applied=applied,
                    decide_s=decide_s,
                    released=len(released),
                    energy_j={i.instance_id: r.energy_j for i, r in zip(self.instances, readings)},
                )
            )
            await self.log.flush_async()
        if self.request_log is not None:
            await self.request_log.flush_async()
        self.epoch += 1
        self.last_actions = actions
        return actions

    async def _apply_clocks(self, snap: Snapshot, actions: Actions) -> dict[str, tuple[bool, str | None, str]]:
        by_id = {i.instance_id: i for i in self.instances}
        views = {v.instance_id: v for v in snap.instances}
        todo = [c for c in actions.clocks if c.instance_id in by_id and views[c.instance_id].supported_clocks_mhz not in ((), (0,))]

        async def one(sc) -> tuple[str, tuple[bool, str | None, str]]:
            act = by_id[sc.instance_id].actuator
            try:
                return sc.instance_id, (await act.apply(sc.sm_clock_mhz), None, act.kind)
            except ActuatorError as exc:
                self.actuator_errors += 1
                log.warning("clock change on %s failed: %s", sc.instance_id, exc)
                return sc.instance_id, (False, str(exc), act.kind)

        results = await asyncio.gather(*(one(sc) for sc in todo))
        return dict(results)

    async def run(self) -> None:
        """Epochs on absolute deadlines until cancelled. A failing epoch is logged, not fatal."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive one bad epoch (logged with traceback)
                log.exception("control epoch %d failed", self.epoch)
                self.epoch += 1
            n = max(n + 1, int((loop.time() - t0) / self.epoch_s) + 1)
            await asyncio.sleep(max(0.0, t0 + n * self.epoch_s - loop.time()))
