"""The GX file context under the home: a Checkpoint per model whose Data Docs keep every validation.

Real Great Expectations on real files: the results store, the suite store and the generated
Data Docs HTML are read back, by a fresh GX context where it matters.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import great_expectations as gx
import pytest
from great_expectations.checkpoint import UpdateDataDocsAction

from autopilot.config import ModelConfig
from autopilot.data import gx_context
from autopilot.data.data_docs import data_docs_indexes
from autopilot.data.validation import build_expectations, validate_batch
from tests.helpers import PROJECT
from tests.unit.test_validation import TOY, raw_toy, toy

ROW = re.compile(r"'run_name': '([^']*)'.*?'_validation_success_text': '(\w+)'", re.DOTALL)


def model(name: str = "toy", **overrides: Any) -> ModelConfig:
    return ModelConfig.model_validate({**TOY, "name": name, **overrides})


def bad_batch(cfg: ModelConfig) -> Any:
    raw = raw_toy()
    raw.loc[0, "color"] = "purple"
    return toy(cfg, raw)


def index_rows(index: Path) -> dict[str, str]:
    """run name -> 'Success' / 'Failed', as the Data Docs index lists them."""
    return dict(ROW.findall(index.read_text(encoding="utf-8")))


def stored_results(home: Path, suite: str) -> dict[str, bool]:
    """run name -> success, from the validation results store's JSON files."""
    found = {}
    for path in (home / "gx" / "uncommitted" / "validations" / suite).rglob("*.json"):
        found[path.relative_to(home / "gx" / "uncommitted" / "validations" / suite).parts[0]] = json.loads(
            path.read_text())["success"]
    return found


def stored_suite(home: Path, name: str) -> list[tuple[str, dict[str, Any]]]:
    """The suite as a fresh file context reads it: (type, kwargs) per expectation."""
    context = gx.get_context(mode="file", project_root_dir=str(home))
    return _comparable(context.suites.get(name).expectations)


def config_suite(cfg: ModelConfig) -> list[tuple[str, dict[str, Any]]]:
    return _comparable(build_expectations(cfg))


def _comparable(expectations: Any) -> list[tuple[str, dict[str, Any]]]:
    """(type, kwargs) per expectation, numbers as floats (GX stores 120 as 120.0), in a fixed order."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    pairs = [(e.expectation_type, plain(json.loads(json.dumps(dict(e.configuration.kwargs), default=str))))
             for e in expectations]
    return sorted(pairs, key=lambda pair: json.dumps(pair, sort_keys=True))


def test_data_docs_keep_every_run_and_show_the_failed_one(tmp_path: Path) -> None:
    cfg = model()
    good = validate_batch(toy(cfg), cfg, home=tmp_path, run_name=gx_context.run_name("toy", "train", "run-1"))
    bad = validate_batch(bad_batch(cfg), cfg, home=tmp_path,
                         run_name=gx_context.run_name("toy", "train", "manual__2026-12-06T22:30:00+00:00"))
    assert good.passed and not bad.passed
    assert bad.reasons == ["column 'color': 1 value not in the allowed categories; examples: ['purple']"]
    index = tmp_path / "gx" / "uncommitted" / "data_docs" / "toy_site" / "index.html"
    assert good.details["data_docs"] == bad.details["data_docs"] == str(index.resolve())
    # Both runs are in the results store and in the index, the second one shown as failed.
    bad_run = "toy.train.manual__2026-12-06T22-30-00-00-00"
    assert stored_results(tmp_path, "toy_suite") == {"toy.train.run-1": True, bad_run: False}
    assert index_rows(index) == {"toy.train.run-1": "Success", bad_run: "Failed"}
    pages = sorted((index.parent / "validations" / "toy_suite").rglob("*.html"))
    assert [p.relative_to(index.parent / "validations" / "toy_suite").parts[0] for p in pages] == sorted(
        ["toy.train.run-1", bad_run])
    assert "purple" in next(p for p in pages if bad_run in str(p)).read_text()
    # The stored suite is the config's whole suite, and the checkpoint updates only this model's site.
    assert stored_suite(tmp_path, "toy_suite") == config_suite(cfg)
    checkpoint = gx.get_context(mode="file", project_root_dir=str(tmp_path)).checkpoints.get("toy_checkpoint")
    assert [a.site_names for a in checkpoint.actions] == [["toy_site"]]
    assert data_docs_indexes(tmp_path) == {"toy": index.resolve()}


def test_config_change_replaces_the_stored_suite(tmp_path: Path) -> None:
    before = model()
    assert validate_batch(toy(before), before, home=tmp_path, run_name="toy.train.a").passed
    features = {**TOY["features"], "age": {"type": "numeric", "min": 0, "max": 60, "nullable": False}}
    after = model(features=features, validation={"min_rows": 10, "max_rows": 500})
    report = validate_batch(toy(after), after, home=tmp_path, run_name="toy.train.b")
    assert not report.passed and any("outside [0, 60]" in r for r in report.reasons), report.reasons
    suite = stored_suite(tmp_path, "toy_suite")
    assert suite == config_suite(after) != config_suite(before)
    ranges = {kw["column"]: kw.get("max_value") for kind, kw in suite if kind == "expect_column_values_to_be_between"}
    assert ranges["age"] == 60
    # Back to the first config: replaced again, and both runs still listed.
    assert validate_batch(toy(before), before, home=tmp_path, run_name="toy.train.c").passed
    assert stored_suite(tmp_path, "toy_suite") == config_suite(before)
    assert index_rows(data_docs_indexes(tmp_path)["toy"]) == {
        "toy.train.a": "Success", "toy.train.b": "Failed", "toy.train.c": "Success"}


def test_missing_columns_keep_the_whole_suite_and_one_reason(tmp_path: Path) -> None:
    cfg = model()
    report = validate_batch(toy(cfg, raw_toy().drop(columns="color")), cfg, home=tmp_path, run_name="toy.train.x")
    assert report.reasons == ["missing column 'color'"]
    assert stored_suite(tmp_path, "toy_suite") == config_suite(cfg)


def test_batches_without_target_have_their_own_suite(tmp_path: Path) -> None:
    cfg = model()
    validate_batch(toy(cfg), cfg, home=tmp_path, run_name="toy.train.t")
    report = validate_batch(toy(cfg).drop(columns="label"), cfg, home=tmp_path, run_name="toy.live.f",
                            require_target=False)
    assert report.passed, report.reasons
    assert stored_suite(tmp_path, "toy_suite") == config_suite(cfg)
    assert "label" not in str(stored_suite(tmp_path, "toy-features_suite"))
    assert set(index_rows(data_docs_indexes(tmp_path)["toy"])) == {"toy.train.t", "toy.live.f"}


def test_run_page_is_copied_for_mlflow(tmp_path: Path) -> None:
    cfg = model()
    copy = tmp_path / "copy"
    assert validate_batch(toy(cfg), cfg, home=tmp_path / "home", run_name="toy.train.one", docs_dir=copy).passed
    (page,) = (copy / "validations").rglob("*.html")
    assert "toy.train.one" in str(page) and (copy / "static").is_dir()
    assert (copy / "expectations" / "toy_suite.html").is_file()


CONCURRENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from autopilot.config import ModelConfig
    from autopilot.data.validation import validate_batch
    from tests.unit.test_validation import TOY, toy
    home, name, tag = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    cfg = ModelConfig.model_validate({**TOY, "name": name})
    for i in range(3):
        report = validate_batch(toy(cfg), cfg, home=home, run_name=f"{name}.train.{tag}-{i}")
        assert report.passed, report.reasons
    print("ok")
""")


def test_concurrent_validations_all_land(tmp_path: Path) -> None:
    # Two models at once, and two copies of one model's task (a retry overlapping the first).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), str(PROJECT)])}
    jobs = [("toy", "first"), ("toy", "retry"), ("other", "only")]
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path), name, tag], cwd=PROJECT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name, tag in jobs]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    indexes = data_docs_indexes(tmp_path)
    assert set(indexes) == {"toy", "other"}
    assert index_rows(indexes["toy"]) == {f"toy.train.{t}-{i}": "Success" for t in ("first", "retry") for i in range(3)}
    assert index_rows(indexes["other"]) == {f"other.train.only-{i}": "Success" for i in range(3)}
    assert len(stored_results(tmp_path, "toy_suite")) == 6 and len(stored_results(tmp_path, "other_suite")) == 3
    # The context is whole: it loads, and both checkpoints with it.
    context = gx.get_context(mode="file", project_root_dir=str(tmp_path))
    assert {c.name for c in context.checkpoints.all()} == {"toy_checkpoint", "other_checkpoint"}
    assert not (tmp_path / "gx" / gx_context.DIRTY_MARK).exists()


def test_a_write_cut_short_is_repaired_by_the_next_holder(tmp_path: Path) -> None:
    cfg = model()
    for run in ("toy.train.a", "toy.train.b"):
        validate_batch(toy(cfg), cfg, home=tmp_path, run_name=run)
    root = tmp_path / "gx"
    index = data_docs_indexes(tmp_path)["toy"]
    # What a kill -9 in the middle of a validation can leave: half-written files, the mark still there.
    (result_b,) = (root / "uncommitted" / "validations" / "toy_suite" / "toy.train.b").rglob("*.json")
    result_b.write_text(result_b.read_text()[:100])
    index.write_text("<html><body>cut")
    config = root / "great_expectations.yml"
    config.write_text(config.read_text()[:-40] + "\n  - ]: {")
    (root / gx_context.DIRTY_MARK).write_text("12345\n")
    report = validate_batch(bad_batch(cfg), cfg, home=tmp_path, run_name="toy.train.c")
    assert not report.passed and report.reasons[0].startswith("column 'color'"), report.reasons
    assert index_rows(index) == {"toy.train.a": "Success", "toy.train.c": "Failed"}
    assert not list((index.parent / "validations" / "toy_suite" / "toy.train.b").rglob("*.html"))
    broken = sorted(p.name for p in (root / "uncommitted" / "broken").rglob("*") if p.is_file())
    assert len(broken) == 2 and broken[0].startswith(result_b.name) and broken[1].startswith("great_expectations.yml")
    assert not (root / gx_context.DIRTY_MARK).exists()
    gx.get_context(mode="file", project_root_dir=str(tmp_path)).checkpoints.get("toy_checkpoint")


def test_a_gx_error_fails_closed_and_leaves_the_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = model()
    assert validate_batch(toy(cfg), cfg, home=tmp_path, run_name="toy.train.a").passed

    def boom(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("docs site exploded")

    monkeypatch.setattr(UpdateDataDocsAction, "run", boom)
    report = validate_batch(toy(cfg), cfg, home=tmp_path, run_name="toy.train.b")
    assert not report.passed and report.reasons == ["validation could not run: RuntimeError: docs site exploded"]
    assert (tmp_path / "gx" / gx_context.DIRTY_MARK).exists()
    monkeypatch.undo()
    # The next run repairs: the whole site is rebuilt, with the result GX stored before the error.
    assert validate_batch(toy(cfg), cfg, home=tmp_path, run_name="toy.train.c").passed
    assert set(index_rows(data_docs_indexes(tmp_path)["toy"])) == {"toy.train.a", "toy.train.b", "toy.train.c"}


def test_lock_wait_is_bounded_and_raises_rather_than_failing_the_gate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gx_context.file_context(tmp_path), pytest.raises(gx_context.ContextLockTimeout):
        with gx_context.file_context(tmp_path, wait=0.2):
            pass
    # A validation that cannot get the context raises (the task fails and Airflow retries it):
    # a busy context is not a verdict on the data.
    monkeypatch.setattr(gx_context, "WAIT_SECONDS", 0.2)
    cfg = model()
    with gx_context.file_context(tmp_path), pytest.raises(gx_context.ContextLockTimeout):
        validate_batch(toy(cfg), cfg, home=tmp_path, run_name="toy.train.busy")


def test_up_and_demo_print_where_the_data_docs_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autopilot.cli.services import print_data_docs

    print_data_docs(tmp_path, "GX Docs  ")  # nothing validated yet: nothing printed
    assert capsys.readouterr().out == ""
    for name in ("toy", "other"):
        cfg = model(name)
        validate_batch(toy(cfg), cfg, home=tmp_path, run_name=f"{name}.train.r")
    print_data_docs(tmp_path, "GX Docs  ")
    lines = capsys.readouterr().out.splitlines()
    sites = tmp_path.resolve() / "gx" / "uncommitted" / "data_docs"
    assert lines == [f"GX Docs  {(sites / f'{n}_site' / 'index.html').as_uri()}  "
                     f"({n}: every validation, failures marked)" for n in ("other", "toy")]
    print_data_docs(tmp_path, "Data Docs       ", only="toy")
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("Data Docs       file://") and line.endswith("(toy: every validation, failures marked)")
    assert Path(line.split()[2].removeprefix("file://")).is_file()


LOOP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from autopilot.config import ModelConfig
    from autopilot.data.validation import validate_batch
    from tests.unit.test_validation import TOY, toy
    cfg = ModelConfig.model_validate(TOY)
    for i in range(1000):
        validate_batch(toy(cfg), cfg, home=Path(sys.argv[1]), run_name=f"toy.train.loop-{i}")
""")


def test_a_validation_killed_inside_the_lock_leaves_a_site_the_next_run_repairs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), str(PROJECT)])}
    mark = tmp_path / "gx" / gx_context.DIRTY_MARK
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(tmp_path)], cwd=PROJECT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while seen < 3 and time.monotonic() < deadline:  # let a few runs finish, then catch one mid-way
            if mark.exists():
                seen += 1
                while mark.exists() and seen < 3 and time.monotonic() < deadline:
                    time.sleep(0.001)
            time.sleep(0.001)
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert mark.exists() and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert mark.exists()  # killed while holding the context
    cfg = model()
    assert validate_batch(toy(cfg), cfg, home=tmp_path, run_name="toy.train.after").passed
    assert not mark.exists()
    stored = stored_results(tmp_path, "toy_suite")
    listed = index_rows(data_docs_indexes(tmp_path)["toy"])
    assert "toy.train.after" in listed and len(stored) >= 3
    assert listed == {name: "Success" for name in stored}  # every stored result listed, no more
    gx.get_context(mode="file", project_root_dir=str(tmp_path)).checkpoints.get("toy_checkpoint")
