"""Where kairosbench plugs into Locust: every event listener, registered once on import.

    init_command_line_parser  declare the options (``kairosbench.locust.settings``)
    init                      validate them (bad flags end the process: exit 2), add the
                              Agents tab to the web UI, wire the worker/master messages
    test_start                master: fix the plan's process count and the run-dir stamp,
                              which Locust sends to the workers with the options;
                              local runner / worker: ``open_run`` (workload, endpoint, records)
    test_stop                 close the run: compact records, summary, manifest
    report_to_master /        the Agents tally travels with Locust's own 3-second reports
    worker_report
    reset_stats               the web UI's "Reset stats" resets the Agents tab too
    quitting                  mark Ctrl-C/SIGTERM, so the run closes as ``interrupted``
    quit                      close a run left open; master: log the Agents table of the test

Per-process state lives on ``environment.kairosbench`` (a ``ProcessState``), next to Locust's
own state; the listeners of events fired without the environment are closures over it, and
the ``quit`` listener finds it through a weak set (it goes away with the environment).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from kairosbench.errors import KairosbenchError
from kairosbench.locust.runtime import LocustRun, ProcessSlot, open_run, utc_stamp
from kairosbench.locust.settings import AgentSettings, add_arguments, run_dir_for, settings_from
from kairosbench.locust.tally import TABLE_COLUMNS, AgentTally

__all__ = ["ProcessState", "state_of", "SetupFailed"]

log = logging.getLogger("kairosbench.locust")

# Options the master adds to the ones it sends workers with every spawn message.
_PROCESS_COUNT = "kairosbench_process_count"
_STAMP = "kairosbench_stamp"
_TEST_NUMBER = "kairosbench_test_number"
# Worker -> master messages.
_MSG_DONE = "kairosbench_done"
_MSG_FAILED = "kairosbench_failed"


class SetupFailed(Exception):
    """The test could not start in this process (its message says why); shown in Exceptions."""


@dataclass(eq=False)
class ProcessState:
    """kairosbench's state in one Locust process, across the tests the web UI may start."""

    settings: AgentSettings
    tally: AgentTally = field(default_factory=AgentTally)
    run: LocustRun | None = None
    last_run_dir: str | None = None
    setup_error: str | None = None
    tests: int = 0
    expected_processes: int = 0  # master: workers when the test started
    done_workers: set[int] = field(default_factory=set)
    is_master: bool = False
    quitting: bool = False
    _reported_missing: bool = False

    def report_missing_run(self, user: Any) -> None:
        """A user found no run: surface the setup error once (Exceptions tab, also from workers)."""
        if self._reported_missing:
            return
        self._reported_missing = True
        exc = SetupFailed(self.setup_error or "kairosbench did not set up this test (see the log)")
        user.environment.events.user_error.fire(user_instance=user, exception=exc, tb=None)


def state_of(environment: Environment) -> ProcessState | None:
    return getattr(environment, "kairosbench", None)


# Locust's "quit" event carries no environment; the states of this process's environments
# (one, in practice) are reachable from here for it.
_STATES: "weakref.WeakSet[ProcessState]" = weakref.WeakSet()


# -- stopping ------------------------------------------------------------------------------
def _end_test(environment: Environment, exit_code: int | None = None) -> None:
    """Stop the test: quit when headless (the process exits), else back to the start form."""
    if exit_code is not None:
        environment.process_exit_code = exit_code
    runner = environment.runner
    if runner is None:
        return
    opts = environment.parsed_options
    if opts is not None and getattr(opts, "headless", False):
        gevent.spawn(runner.quit)
    else:
        gevent.spawn(runner.stop)


def _plan_done(environment: Environment) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(_MSG_DONE, {"worker_index": runner.worker_index})
    else:
        _end_test(environment)


def _setup_failed(environment: Environment, state: ProcessState, exc: BaseException) -> None:
    state.setup_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KairosbenchError) else str(exc)
    log.error("Error: kairosbench could not start the test: %s", state.setup_error)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(_MSG_FAILED, {"worker_index": runner.worker_index, "message": state.setup_error})
    else:
        _end_test(environment, exit_code=getattr(exc, "exit_code", 1))


# -- listeners -----------------------------------------------------------------------------
@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_kw: Any) -> None:
    add_arguments(parser, locust=True)


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    try:
        settings = settings_from(environment.parsed_options) if environment.parsed_options is not None else AgentSettings()
    except KairosbenchError as exc:
        log.error("Error: %s", exc)
        raise SystemExit(exc.exit_code) from None  # bad flags: the process ends here, as Locust's own do
    runner = environment.runner
    state = ProcessState(settings, is_master=isinstance(runner, MasterRunner))
    environment.kairosbench = state  # type: ignore[attr-defined]
    _STATES.add(state)
    if isinstance(runner, MasterRunner):

        def on_done(environment: Environment, msg: Any, **_kw: Any) -> None:
            state.done_workers.add(int(msg.data.get("worker_index", -1)))
            if state.expected_processes and len(state.done_workers) >= state.expected_processes:
                log.info("all %d workers replayed their share of --max-sessions; stopping", state.expected_processes)
                _end_test(environment)

        def on_failed(environment: Environment, msg: Any, **_kw: Any) -> None:
            log.error("Error: worker %s could not start the test: %s", msg.data.get("worker_index"), msg.data.get("message"))
            _end_test(environment, exit_code=2)

        runner.register_message(_MSG_DONE, on_done)
        runner.register_message(_MSG_FAILED, on_failed)
    # These three are fired without the environment: close over this process's state.
    def on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        data["kairosbench"] = state.tally.drain()

    def on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        report = data.get("kairosbench")
        if report:
            state.tally.merge(report)

    def on_reset_stats(**_kw: Any) -> None:
        state.tally.clear()

    if isinstance(runner, WorkerRunner):
        environment.events.report_to_master.add_listener(on_report_to_master)
    if isinstance(runner, MasterRunner):
        environment.events.worker_report.add_listener(on_worker_report)
    environment.events.reset_stats.add_listener(on_reset_stats)
    if environment.web_ui is not None:
        from kairosbench.locust.web import install_web_extension

        install_web_extension(environment, state)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    state = state_of(environment)
    if state is None:
        return
    runner = environment.runner
    opts = environment.parsed_options
    state.tally.clear()
    state.setup_error = None
    state._reported_missing = False
    if isinstance(runner, MasterRunner):
        state.tests += 1
        state.expected_processes = max(1, runner.worker_count)
        state.done_workers = set()
        if opts is not None:
            setattr(opts, _PROCESS_COUNT, state.expected_processes)
            setattr(opts, _STAMP, utc_stamp())
            setattr(opts, _TEST_NUMBER, state.tests)
        return
    try:
        settings = settings_from(opts) if opts is not None else state.settings
        state.settings = settings
        if isinstance(runner, WorkerRunner):
            slot = ProcessSlot("worker", runner.worker_index, int(getattr(opts, _PROCESS_COUNT, 1) or 1))
            stamp = str(getattr(opts, _STAMP, "") or utc_stamp())
            test_number = int(getattr(opts, _TEST_NUMBER, 1) or 1)
        else:
            state.tests += 1
            slot, stamp, test_number = ProcessSlot("local", 0, 1), utc_stamp(), state.tests
        run_dir = run_dir_for(settings, stamp=stamp, test_number=test_number, worker_index=slot.worker_index)
        run = open_run(environment, settings, slot, run_dir, state.tally, explicit_dir=settings.out is not None)
    except Exception as exc:  # noqa: BLE001 - any setup failure stops the test with its message
        _setup_failed(environment, state, exc)
        return
    run.on_plan_done = lambda: _plan_done(environment)
    state.run = run
    state.last_run_dir = str(run.run_dir)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    state = state_of(environment)
    if state is None or state.run is None:
        return
    run = state.run
    # Ctrl-C / SIGTERM fire "quitting" before Locust stops the test; -t, --max-sessions and the
    # Stop button stop it first.
    run.close("interrupted" if state.quitting else "completed")
    if state.run is run:
        state.run = None


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    state = state_of(environment)
    if state is not None:
        state.quitting = True


@events.quit.add_listener
def _on_quit(**_kw: Any) -> None:
    """After Locust's shutdown (users stopped, a master's final worker reports in)."""
    for state in list(_STATES):
        if state.run is not None:  # the test did not stop cleanly (or is still closing): finish it
            state.run.close("interrupted")
            state.run = None
        if state.is_master and state.tally.kinds:
            log.info("kairosbench agents (all workers)\n%s", agents_table_text(state.tally))


def agents_table_text(tally: AgentTally, width: int = 140) -> str:
    """The Agents table as plain text (logs, headless runs)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for col in TABLE_COLUMNS:
        table.add_column(col.title, justify="left" if col.key == "agent_kind" else "right")
    for row in tally.rows():
        table.add_row(*("—" if row[c.key] is None else f"{row[c.key]:,}" if isinstance(row[c.key], int) else str(row[c.key]) for c in TABLE_COLUMNS))
    buf = StringIO()
    Console(file=buf, width=width, color_system=None).print(table)
    return buf.getvalue().rstrip()
