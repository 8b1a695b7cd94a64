"""Clock baselines: what KAIROS is compared against (ANCHORS.md §1.4, §2.1, §6.4).

* ``default``  leave the driver's governor alone (reset any lock every epoch).
* ``max``      lock the maximum supported clock (KAIROS's "max clock" baseline, 1680 MHz there).
* ``static``   lock one clock, snapped to the nearest supported value (KAIROS: 810 MHz;
               ``static:900`` is its sweet spot; sweep it to find the knee).
* ``util-dvfs`` utilisation-driven DVFS in the manner of Linux's ``ondemand`` governor.
* ``slo-dvfs`` SLO-driven DVFS in the style of throttLL'eM / GreenLLM / VoltanaLLM's EcoFreq:
               the maximum clock while anything waits, otherwise the lowest clock a simple
               decode model predicts still meets the per-agent throughput target.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.clocks import snap_nearest, snap_up
from controllers.snapshot import AgentPhase, AgentView, InstanceView, SetClock, Snapshot
from controllers.stats import percentile

__all__ = ["DefaultClock", "StaticClock", "UtilDvfsParams", "UtilDvfs", "SloDvfsParams", "SloDvfs", "predicted_min_clock_mhz"]


class DefaultClock:
    """No DVFS decisions at all: every instance runs under its default governor (reset, None)."""

    name = "default"

    def clocks(self, snap: Snapshot) -> list[SetClock]:
        return [SetClock(i.instance_id, None) for i in snap.instances]


class StaticClock:
    """One locked clock for every instance: ``mhz`` snapped to the nearest supported value, or the max.

    Snapping per instance lets one spec ("static:900") run on GPUs with different clock
    tables; the snapped value is what control.parquet records as applied.
    """

    def __init__(self, mhz: int | None = None) -> None:
        if mhz is not None and mhz <= 0:
            raise ValueError(f"a static clock must be a positive MHz value (got {mhz})")
        self.mhz = mhz
        self.name = "max" if mhz is None else f"static:{mhz}"

    def clocks(self, snap: Snapshot) -> list[SetClock]:
        return [
            SetClock(i.instance_id, i.max_clock_mhz if self.mhz is None else snap_nearest(i.supported_clocks_mhz, self.mhz))
            for i in snap.instances
        ]


@dataclass(frozen=True, slots=True)
class UtilDvfsParams:
    """Linux ``ondemand`` (drivers/cpufreq/cpufreq_ondemand.c): above ``up_threshold`` busy, jump
    to max; otherwise f = f_min + busy × (f_max − f_min). One sample per control epoch.

    Busy is NVML's utilization.gpu (the fraction of time any kernel ran), which is near 1 under
    any serving load: that is the point of this baseline, it shows why a utilisation governor
    saves little on LLM serving. Without a utilisation reading, busy = 1 while requests run.
    """

    up_threshold: float = 0.8  # ondemand's default up_threshold (80%)

    def __post_init__(self) -> None:
        if not 0 < self.up_threshold <= 1:
            raise ValueError(f"up_threshold must lie in (0, 1] (got {self.up_threshold})")


class UtilDvfs:
    """Utilisation-driven DVFS; stateless."""

    name = "util-dvfs"

    def __init__(self, params: UtilDvfsParams = UtilDvfsParams()) -> None:
        self.params = params
        self.last_notes: dict[str, str] = {}

    def clocks(self, snap: Snapshot) -> list[SetClock]:
        out, notes = [], {}
        for inst in snap.instances:
            busy = inst.gpu_util_frac if inst.gpu_util_frac is not None else (1.0 if inst.num_running > 0 else 0.0)
            busy = min(1.0, max(0.0, busy))
            if busy >= self.params.up_threshold:
                mhz = inst.max_clock_mhz
            else:
                lo, hi = inst.min_clock_mhz, inst.max_clock_mhz
                mhz = snap_nearest(inst.supported_clocks_mhz, lo + busy * (hi - lo))
            out.append(SetClock(inst.instance_id, mhz))
            notes[inst.instance_id] = f"busy {busy:.2f}"
        self.last_notes = notes
        return out


@dataclass(frozen=True, slots=True)
class SloDvfsParams:
    """The decode model and the target of ``slo-dvfs``.

    Decode model: one engine step emits one token per running agent, so an agent's output
    rate is 1 / t_step, and

        t_step(f) = t_step(f_now) · ((1 − φ) + φ · f_now / f)

    where φ (``clock_bound_frac``) is the share of a step that scales with 1/f (compute:
    attention and expert FLOPs, sampling) and the rest is clock-insensitive (weights and KV
    streamed from HBM). This is the roofline split of GreenLLM's and throttLL'eM's latency
    models reduced to one parameter; 0.35 is our default for memory-bound decode at agentic
    batch sizes (the emulator's roofline gives 0.2-0.5 across batch 8-64). The measured P5
    per-agent rate at the current effective clock anchors t_step(f_now); the policy picks the
    lowest supported f whose predicted rate is ≥ τ·(1 + ``margin``). Solved in closed form:

        f ≥ φ · f_now / (r / (τ(1 + margin)) − (1 − φ))

    and the maximum clock when the right side is not positive (the target is out of reach).
    Like EcoFreq, anything waiting in the engine queue or held at the gateway means max clock.
    """

    clock_bound_frac: float = 0.35  # φ
    margin: float = 0.1  # aim 10% above the SLO to absorb model error
    tau_tok_s: float | None = None  # None: the run's SLO (snapshot.slo_tok_s)

    def __post_init__(self) -> None:
        if not 0 < self.clock_bound_frac <= 1 or self.margin < 0:
            raise ValueError("need 0 < clock_bound_frac <= 1 and margin >= 0")


def predicted_min_clock_mhz(rate_tok_s: float, f_now_mhz: float, target_tok_s: float, clock_bound_frac: float) -> float | None:
    """The lowest clock (MHz, unsnapped) at which the decode model predicts ``target_tok_s``; None if none does."""
    phi = clock_bound_frac
    # r(f) = r_now / ((1 − φ) + φ·f_now/f) ≥ target  ⇔  φ·f_now/f ≤ r_now/target − (1 − φ)
    ratio = rate_tok_s / target_tok_s
    denom = ratio - (1.0 - phi)
    if denom <= 0:
        return None
    return phi * f_now_mhz / denom


class SloDvfs:
    """SLO-driven DVFS on the P5 per-agent output rate; stateless."""

    name = "slo-dvfs"

    def __init__(self, params: SloDvfsParams = SloDvfsParams()) -> None:
        self.params = params
        self.last_notes: dict[str, str] = {}

    def _one(self, inst: InstanceView, agents: list[AgentView], tau: float) -> tuple[int, str]:
        if inst.num_waiting > 0 or inst.held_agents > 0:
            return inst.max_clock_mhz, f"queue: {inst.num_waiting} waiting, {inst.held_agents} held"
        if not agents and inst.num_running == 0:
            return inst.min_clock_mhz, "idle"
        p5 = percentile((a.output_tok_s for a in agents if a.output_tok_s is not None), 5)
        if p5 is None:
            return inst.max_clock_mhz, "no rate measured yet"
        f_now = inst.sm_clock_mhz if inst.sm_clock_mhz > 0 else float(inst.max_clock_mhz)
        f = predicted_min_clock_mhz(p5, f_now, tau * (1 + self.params.margin), self.params.clock_bound_frac)
        if f is None:
            return inst.max_clock_mhz, f"P5 {p5:.1f} tok/s: target {tau:g} out of reach"
        return snap_up(inst.supported_clocks_mhz, f), f"P5 {p5:.1f} tok/s at {f_now:.0f} MHz -> need {f:.0f} MHz"

    def clocks(self, snap: Snapshot) -> list[SetClock]:
        tau = self.params.tau_tok_s if self.params.tau_tok_s is not None else snap.slo_tok_s
        by: dict[str, list[AgentView]] = {}
        for a in snap.agents:
            if a.instance_id is not None and a.phase is not AgentPhase.DONE:
                by.setdefault(a.instance_id, []).append(a)
        out, notes = [], {}
        for inst in snap.instances:
            mhz, why = self._one(inst, by.get(inst.instance_id, []), tau)
            out.append(SetClock(inst.instance_id, mhz))
            notes[inst.instance_id] = why
        self.last_notes = notes
        return out
