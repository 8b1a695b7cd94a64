"""Policy specs by name and composition; bad specs fail with UsageError; `kairosbench policies` lists them."""

from __future__ import annotations

from io import StringIO

import pytest
from click.testing import CliRunner
from rich.console import Console

from controllers import Policy
from controllers.admission_baselines import AimdAdmission, NoAdmission
from controllers.base import ComposedPolicy
from controllers.clock_baselines import SloDvfs, StaticClock, UtilDvfs
from controllers.cli import policies, render_policies
from controllers.kairos import KairosPolicy
from controllers.registry import PRESETS, build_policy, parse_spec
from controllers.routing import LeastLoadedRouter, RoundRobinRouter
from kairosbench.errors import UsageError


@pytest.mark.parametrize("spec", list(PRESETS))
def test_every_preset_builds(spec: str) -> None:
    policy = build_policy(spec)
    assert isinstance(policy, Policy)
    assert policy.name == spec


def test_shorthands_fill_paper_baseline_defaults() -> None:
    p = build_policy("static:900")
    assert isinstance(p, ComposedPolicy) and isinstance(p.clock, StaticClock) and p.clock.mhz == 900
    assert isinstance(p.admission, NoAdmission) and isinstance(p.routing, RoundRobinRouter)
    p = build_policy("aimd")
    assert isinstance(p.clock, StaticClock) and p.clock.mhz is None and isinstance(p.admission, AimdAdmission)
    p = build_policy("least-loaded")
    assert isinstance(p.routing, LeastLoadedRouter)
    assert isinstance(build_policy("util-dvfs").clock, UtilDvfs) and isinstance(build_policy("slo-dvfs").clock, SloDvfs)


def test_composition_and_parameters() -> None:
    p = build_policy("clock=static:900, admission=aimd(initial_agents=4,kv_high=0.9), routing=least-loaded")
    assert p.clock.mhz == 900 and p.admission.params.initial_agents == 4 and p.admission.params.kv_high == 0.9
    assert isinstance(p.routing, LeastLoadedRouter)
    assert p.name == "clock=static:900,admission=aimd(initial_agents=4,kv_high=0.9),routing=least-loaded"
    k = build_policy("kairos(alpha=0.8,tau_tok_s=35,level_fracs=0.5/0.6,park_idle=false)")
    assert isinstance(k, KairosPolicy)
    assert (k.params.alpha, k.params.tau_tok_s, k.params.level_fracs, k.params.park_idle) == (0.8, 35.0, (0.5, 0.6), False)
    assert k.clock.params is k.routing.params  # one parameter set for the three knobs
    mixed = build_policy("clock=kairos,routing=kairos")
    assert type(mixed) is ComposedPolicy and isinstance(mixed.admission, NoAdmission)


def test_each_build_is_fresh_state() -> None:
    assert build_policy("aimd").admission is not build_policy("aimd").admission


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty"),
        ("turbo", "unknown policy 'turbo'"),
        ("static", "static:<MHz>"),
        ("static:fast", "number of MHz"),
        ("kairos(alpha=2)", "alpha"),
        ("kairos(zeta=1)", "unknown parameter 'zeta'"),
        ("kairos(alpha)", "key=value"),
        ("kairos(alpha=x)", "not a valid float"),
        ("clock=max,clock=static:900", "given twice"),
        ("clock=warp", "unknown clock policy 'warp'"),
        ("max,aimd", "clock=..."),
        ("kairos(alpha=0.8", "unbalanced"),
        ("rr:3", "takes no"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, fragment: str) -> None:
    with pytest.raises(UsageError) as exc:
        build_policy(spec)
    assert fragment in str(exc.value)


def test_parse_spec_expands_shorthand() -> None:
    terms = parse_spec("static:810")
    assert (terms["clock"].name, terms["clock"].arg, terms["admission"].name, terms["routing"].name) == ("static", "810", "none", "rr")


def test_policies_command_lists_names_and_parameters() -> None:
    buf = StringIO()
    render_policies(Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    for needle in ["kairos", "static:900", "util-dvfs", "slo-dvfs", "aimd", "least-loaded", "alpha", "0.75", "gamma", "CONCUR", "[2nd-hand review]"]:
        assert needle in text
    result = CliRunner().invoke(policies, ["--check", "clock=static:900,admission=aimd,routing=least-loaded"])
    assert result.exit_code == 0 and "least-loaded" in result.output
