"""Policies by name: the one place a spec string becomes a policy object.

Grammar (what ``--policy`` accepts)::

    spec      := shorthand | part ("," part)*
    part      := ("clock" | "admission" | "routing") "=" term
    shorthand := term
    term      := name [":" arg] ["(" key "=" value ("," key "=" value)* ")"]

Examples: ``kairos``, ``max``, ``static:900``, ``static:810``, ``util-dvfs``, ``slo-dvfs``,
``aimd``, ``rr``, ``least-loaded``, ``kairos(alpha=0.8,tau_tok_s=35)``,
``clock=static:900,admission=aimd,routing=least-loaded``.

A shorthand fills the knobs it does not name with the paper's baseline setting: clock
``max``, admission ``none``, routing ``rr`` (KAIROS compared against max clock with
round-robin routing); ``kairos`` alone means KAIROS for all three knobs with one shared
parameter set. A tuple parameter is written with ``/`` between items
(``level_fracs=0.5/0.6/0.7``). Unknown names and parameters raise ``UsageError`` listing
what exists.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Union

from controllers.admission_baselines import AimdAdmission, AimdParams, NoAdmission
from controllers.base import ComposedPolicy, Policy
from controllers.clock_baselines import DefaultClock, SloDvfs, SloDvfsParams, StaticClock, UtilDvfs, UtilDvfsParams
from controllers.kairos import KairosAdmission, KairosClock, KairosParams, KairosPolicy, KairosRouter
from controllers.routing import LeastLoadedRouter, RoundRobinRouter
from kairosbench.errors import UsageError

__all__ = ["Component", "COMPONENTS", "PRESETS", "KINDS", "build_policy", "parse_spec", "components", "param_defaults"]

KINDS = ("clock", "admission", "routing")
DEFAULTS = {"clock": "max", "admission": "none", "routing": "rr"}


@dataclass(frozen=True)
class Component:
    """One named strategy for one knob."""

    name: str
    kind: str  # clock | admission | routing
    summary: str
    source: str
    params: type | None = None  # frozen dataclass of parameters, or None
    arg: str | None = None  # what ":<arg>" means, or None when the name takes no argument
    build: Callable[[Any, str | None], object] = lambda params, arg: None


def _static(params: Any, arg: str | None) -> StaticClock:
    if arg is None:
        raise UsageError("static needs a clock: static:<MHz>, e.g. static:900")
    try:
        mhz = int(float(arg))
    except ValueError:
        raise UsageError(f"static:{arg}: the clock must be a number of MHz, e.g. static:900") from None
    if mhz <= 0:
        raise UsageError(f"static:{arg}: the clock must be positive")
    return StaticClock(mhz)


COMPONENTS: dict[tuple[str, str], Component] = {
    (c.kind, c.name): c
    for c in [
        Component("kairos", "clock", "clock level rising with U_k/U_max, protective high above α, SLO boost to max, idle park", "KAIROS §6, Eq. 8-9 [2nd-hand review]", KairosParams, build=lambda p, a: KairosClock(p)),
        Component("max", "clock", "lock the maximum supported clock", "KAIROS baseline (1680 MHz on H100 NVL)", build=lambda p, a: StaticClock(None)),
        Component("static", "clock", "lock one clock, snapped to the nearest supported value", "KAIROS baseline 810 MHz; 900 MHz its sweet spot", arg="MHz", build=_static),
        Component("default", "clock", "leave the driver's governor alone (reset every lock)", "NVIDIA default behaviour", build=lambda p, a: DefaultClock()),
        Component("util-dvfs", "clock", "ondemand-style: max above the busy threshold, else proportional to busy", "Linux cpufreq ondemand; NVIDIA default governor", UtilDvfsParams, build=lambda p, a: UtilDvfs(p)),
        Component("slo-dvfs", "clock", "max while anything waits, else the lowest clock a decode model says meets the SLO", "throttLL'eM / GreenLLM / VoltanaLLM EcoFreq", SloDvfsParams, build=lambda p, a: SloDvfs(p)),
        Component("kairos", "admission", "hold turns above β·U_max, admit new agents below γ·U_max", "KAIROS §6.2.4 [2nd-hand review]", KairosParams, build=lambda p, a: KairosAdmission(p)),
        Component("none", "admission", "no gateway admission control", "the engine's own scheduler", build=lambda p, a: NoAdmission()),
        Component("aimd", "admission", "AIMD window on active agents from KV usage and prefix-hit rate", "CONCUR (arXiv 2601.22705)", AimdParams, build=lambda p, a: AimdAdmission(p)),
        Component("kairos", "routing", "consolidate below 50% full, else least-loaded; sticky; rare reassignment", "KAIROS §6.3, Alg. 2-3 [2nd-hand review]", KairosParams, build=lambda p, a: KairosRouter(p)),
        Component("rr", "routing", "new agents round-robin, then sticky", "KAIROS baseline", build=lambda p, a: RoundRobinRouter()),
        Component("least-loaded", "routing", "new agents to the lowest U_k/U_max, then sticky", "common load-balancer default", build=lambda p, a: LeastLoadedRouter()),
    ]
}

# Named presets for ``kairosbench policies``: the specs the brief and docs use.
PRESETS: dict[str, str] = {
    "kairos": "KAIROS controller + admission + router",
    "max": "clock=max, admission=none, routing=rr",
    "static:900": "clock locked at 900 MHz (snapped), no admission, rr",
    "static:810": "clock locked at 810 MHz (snapped), no admission, rr",
    "default": "driver governor, no admission, rr",
    "util-dvfs": "ondemand-style DVFS, no admission, rr",
    "slo-dvfs": "SLO-driven DVFS, no admission, rr",
    "aimd": "max clock + CONCUR-style AIMD admission, rr",
    "rr": "max clock, no admission, round-robin",
    "least-loaded": "max clock, no admission, least-loaded",
}

_PART = re.compile(r"^\s*(clock|admission|routing)\s*=\s*(.+?)\s*$", re.S)
_TERM = re.compile(r"^\s*([a-z][a-z0-9_-]*)\s*(?::\s*([^()\s]+))?\s*(?:\((.*)\))?\s*$", re.S | re.I)


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise UsageError(f"policy spec {text!r}: unbalanced ')'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise UsageError(f"policy spec {text!r}: unbalanced '('")
    parts.append("".join(cur))
    return parts


def _convert(cls: type, key: str, raw: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in hints:
        raise UsageError(f"unknown parameter {key!r}; {cls.__name__} has: {', '.join(names)}")
    hint = hints[key]
    raw = raw.strip()
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    try:
        if origin in (Union, types.UnionType) and type(None) in args:
            if raw.lower() in ("none", "null", ""):
                return None
            hint = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is tuple:
            return tuple(float(x) for x in raw.split("/") if x.strip())
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise UsageError(f"parameter {key}={raw!r}: not a valid {getattr(hint, '__name__', hint)}") from None
    return raw


def _params(cls: type | None, body: str | None, label: str) -> Any:
    if cls is None:
        if body and body.strip():
            raise UsageError(f"{label} takes no parameters (got '({body})')")
        return None
    kwargs: dict[str, Any] = {}
    for item in _split_top(body) if body and body.strip() else []:
        if "=" not in item:
            raise UsageError(f"{label}: parameter {item.strip()!r} must be written key=value")
        k, v = item.split("=", 1)
        kwargs[k.strip()] = _convert(cls, k.strip(), v)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise UsageError(f"{label}: {exc}") from None


@dataclass(frozen=True)
class _Term:
    name: str
    arg: str | None
    body: str | None
    text: str


def _term(text: str) -> _Term:
    m = _TERM.match(text)
    if not m:
        raise UsageError(f"cannot read policy term {text.strip()!r}: expected name[:arg][(key=value,...)]")
    name, arg, body = m.group(1).lower(), m.group(2), m.group(3)
    return _Term(name, arg, body, text.strip())


def _component(kind: str, t: _Term) -> object:
    comp = COMPONENTS.get((kind, t.name))
    if comp is None:
        have = sorted(n for k, n in COMPONENTS if k == kind)
        raise UsageError(f"unknown {kind} policy {t.name!r}; {kind} policies: {', '.join(have)}")
    if comp.arg is None and t.arg is not None:
        raise UsageError(f"{kind} policy {t.name!r} takes no ':{t.arg}' argument")
    return comp.build(_params(comp.params, t.body, t.text), t.arg)


def parse_spec(spec: str) -> dict[str, _Term]:
    """The term for each knob (clock, admission, routing) a spec names, shorthands expanded."""
    if not spec or not spec.strip():
        raise UsageError("empty policy spec; try 'kairos' or see `kairosbench policies`")
    parts = _split_top(spec)
    keyed = [_PART.match(p) for p in parts]
    if len(parts) == 1 and keyed[0] is None:
        t = _term(parts[0])
        kinds = [k for k in KINDS if (k, t.name) in COMPONENTS]
        if not kinds:
            names = sorted({n for _, n in COMPONENTS} | set(PRESETS))
            raise UsageError(f"unknown policy {t.name!r}; known: {', '.join(names)} (see `kairosbench policies`)")
        terms = {k: _term(DEFAULTS[k]) for k in KINDS}
        if t.name == "kairos":
            return {k: t for k in KINDS}
        terms[kinds[0]] = t
        return terms
    terms = {k: _term(DEFAULTS[k]) for k in KINDS}
    seen: set[str] = set()
    for p, m in zip(parts, keyed):
        if m is None:
            raise UsageError(f"policy spec {spec!r}: {p.strip()!r} must be clock=..., admission=... or routing=... when several knobs are given")
        kind = m.group(1)
        if kind in seen:
            raise UsageError(f"policy spec {spec!r}: {kind} given twice")
        seen.add(kind)
        terms[kind] = _term(m.group(2))
    return terms


def build_policy(spec: str) -> Policy:
    """A fresh policy object for ``spec`` (policies keep state between epochs: one per run)."""
    terms = parse_spec(spec)
    name = "".join(spec.split())
    if all(terms[k].name == "kairos" for k in KINDS) and len({terms[k].text for k in KINDS}) == 1:
        t = terms["clock"]
        return KairosPolicy(_params(KairosParams, t.body, t.text), name=name)
    return ComposedPolicy(
        _component("clock", terms["clock"]),  # type: ignore[arg-type]
        _component("admission", terms["admission"]),  # type: ignore[arg-type]
        _component("routing", terms["routing"]),  # type: ignore[arg-type]
        name=name,
    )


def components() -> list[Component]:
    """Every component, in table order (clock, admission, routing)."""
    return sorted(COMPONENTS.values(), key=lambda c: (KINDS.index(c.kind), list(COMPONENTS).index((c.kind, c.name))))


def param_defaults(comp: Component) -> list[tuple[str, Any, str]]:
    """(name, default, type) for each parameter of ``comp``."""
    if comp.params is None:
        return []
    hints = typing.get_type_hints(comp.params)
    def show(t: Any) -> str:
        return t.__name__ if type(t) is type else str(t).replace("typing.", "")

    return [(f.name, f.default, show(hints[f.name])) for f in dataclasses.fields(comp.params)]
