"""`autopilot demo` on the real scheduler: following runs by their events, and never leaving services behind.

- `SchedulerRuns.follow` hands each run only its own events (by dag_id and run_id) and keeps the
  events of a run nobody follows yet (the retrain a monitoring run triggers) for its turn;
- `services_for_demo` refuses to start over services of the same home (an earlier `make up`),
  and stops what it started whatever ends the demo: an error, Ctrl-C, SIGTERM; `--keep-up` keeps
  them only after a normal end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters.airflow_api import TransientError
from autopilot.cli.demo_runs import SchedulerRuns, ServicesRunning, services_for_demo
from autopilot.orchestration.embedded import Embedded, EventFile
from autopilot.settings import Settings
from tests.helpers import PROJECT


class Clock:
    """A clock that moves only when the follower sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """Answers `run` from a list of states per run (the last one repeats); None: not created yet."""

    def __init__(self, states: dict[tuple[str, str], list[Any]], review: list[str] | None = None) -> None:
        self.states = states
        self.review = review or ["running"]
        self.asked_review = 0

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        assert task_id == "review"
        self.asked_review += 1
        return {"task_id": task_id, "state": self.review.pop(0) if len(self.review) > 1 else self.review[0]}

    def run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        states = self.states[(dag_id, run_id)]
        state = states.pop(0) if len(states) > 1 else states[0]
        if state == "busy":
            raise TransientError("database is locked")
        return None if state is None else {"dag_run_id": run_id, "state": state}


def event(path: Path, kind: str, task: str, dag_id: str, run_id: str) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps({"event": kind, "task_id": task, "dag_id": dag_id, "run_id": run_id}) + "\n")


def test_follow_passes_a_run_its_own_events_and_keeps_the_others_for_their_turn(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events = EventFile(path)
    event(path, "running", "monitor", "mon", "w1")
    event(path, "running", "validate", "train", "r1")  # the retrain, started before its monitoring run ended
    event(path, "success", "monitor", "mon", "w1")
    event(path, "running", "healthy", "other", "w1")  # same run id, another DAG
    clock = Clock()
    runs = SchedulerRuns(Api(
                         {("mon", "w1"): ["busy", "running", "success"], ("train", "r1"): [None, "success"]}),
                         events, poll_seconds=1.0, tick_seconds=0.5, clock=clock, sleep=clock.sleep)
    seen: list[tuple[str, str]] = []
    ticks: list[float] = []
    run = runs.follow("mon", "w1", on_event=lambda e: seen.append((e["event"], e["task_id"])),
                      on_tick=lambda: ticks.append(clock.now))
    assert run["state"] == "success"
    assert seen == [("running", "monitor"), ("success", "monitor")]
    assert len(ticks) >= 3  # ticked while waiting, through a busy answer
    event(path, "success", "validate", "train", "r1")
    seen.clear()
    assert runs.follow("train", "r1", on_event=lambda e: seen.append((e["event"], e["task_id"])))["state"] == "success"
    assert seen == [("running", "validate"), ("success", "validate")]


def test_a_run_parked_for_a_persons_answer_is_returned_still_running(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events = EventFile(path)
    for kind, task in (("running", "decide"), ("success", "decide")):
        event(path, kind, task, "train", "r1")
    clock = Clock()
    api = Api({("train", "r1"): ["running"]}, review=["running", "awaiting_input"])
    runs = SchedulerRuns(api, events, clock=clock, sleep=clock.sleep)
    with pytest.raises(TimeoutError):  # before `review` runs, its state is not asked: the run just goes on
        runs.follow("train", "r1", timeout=20, human_task="review")
    assert api.asked_review == 0
    event(path, "running", "review", "train", "r1")
    run = runs.follow("train", "r1", timeout=60, human_task="review")
    assert run["state"] == "running" and run["awaiting_input"] == "review"
    assert api.asked_review == 2


def test_follow_gives_up_on_a_run_that_never_ends(tmp_path: Path) -> None:
    clock = Clock()
    runs = SchedulerRuns(Api(
                         {("train", "r1"): [None]}), EventFile(tmp_path / "e.jsonl"), clock=clock,
                         sleep=clock.sleep)
    with pytest.raises(TimeoutError, match="run r1 of train is still not created after 30 s"):
        runs.follow("train", "r1", timeout=30)


class Services:
    """Stands in for `Embedded` in `services_for_demo`: records start and stop."""

    def __init__(self, running: list[str] | None = None, healthy: bool = True) -> None:
        self.already = running or []
        self.healthy = healthy
        self.calls: list[str] = []
        self.settings = argparse.Namespace(home=Path("/nowhere"))
        self.run_dir = Path("/nowhere/run")

    def running(self) -> list[str]:
        return self.already

    def start(self) -> list[str]:
        self.calls.append("start")
        return ["scheduler"]

    def wait_healthy(self, timeout: float) -> bool:
        return self.healthy

    def api(self) -> Any:
        self.calls.append("api")
        return argparse.Namespace(close=lambda: self.calls.append("close"))

    def stop(self) -> list[str]:
        self.calls.append("stop")
        return ["scheduler"]


def quiet(line: str) -> None:
    return None


@pytest.mark.parametrize("ending", [RuntimeError("boom"), KeyboardInterrupt(), "SIGTERM", "SIGHUP"])
def test_the_services_are_stopped_whatever_ends_the_demo(ending: Any) -> None:
    services = Services()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises((RuntimeError, KeyboardInterrupt)):
        with services_for_demo(services, keep_up=True, say=quiet):
            if isinstance(ending, str):
                os.kill(os.getpid(), getattr(signal, ending))
            raise ending
    assert services.calls == ["start", "api", "close", "stop"]
    assert signal.getsignal(signal.SIGTERM) == before  # the demo's handler is gone with it


def test_keep_up_keeps_them_after_a_normal_end_and_unhealthy_services_are_stopped() -> None:
    kept, stopped = Services(), Services()
    with services_for_demo(kept, keep_up=True, say=quiet):
        pass
    with services_for_demo(stopped, say=quiet):
        pass
    assert kept.calls == ["start", "api", "close"] and stopped.calls[-1] == "stop"
    unhealthy = Services(healthy=False)
    with pytest.raises(RuntimeError, match="not healthy"):
        with services_for_demo(unhealthy, say=quiet):
            pytest.fail("the demo must not run on services that are not healthy")
    assert unhealthy.calls == ["start", "stop"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_demo_refuses_to_start_over_running_services_and_names_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    from autopilot.cli.services import cmd_demo

    home = tmp_path / "home"
    monkeypatch.setenv("AUTOPILOT_HOME", str(home))
    monkeypatch.chdir(PROJECT)
    embedded = Embedded(settings=Settings.from_env({"AUTOPILOT_HOME": str(home)}), project=PROJECT)
    embedded.run_dir.mkdir(parents=True)
    (embedded.run_dir / "scheduler.pid").write_text(str(sleeper.pid))  # an earlier `make up`'s scheduler
    assert embedded.running() == ["scheduler"]
    with pytest.raises(ServicesRunning):
        with services_for_demo(embedded, say=quiet):
            pytest.fail("started over running services")
    code = cmd_demo(argparse.Namespace(model="adult_income", no_loop=True, keep_up=False))
    err = capsys.readouterr().err
    assert code == 2
    assert "already run (scheduler)" in err and "make down" in err
    assert sorted(p.name for p in embedded.run_dir.glob("*.pid")) == ["scheduler.pid"]  # nothing else started
    assert sleeper.poll() is None  # and nothing stopped
