"""Fixtures of the reliability suite (`make test-reliability`): real services and fault injection.

The integration suite's PostgreSQL and moto fixtures are shared (a missing service fails the run
when `AUTOPILOT_REQUIRE_SERVICES=1`, as in CI). `tests/reliability/inject.py` has the tools that
inject faults: a proxy answering 503/429, hanging or resetting, crash points armed in child
processes, and a real MLflow server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import moto_server, postgres_db, postgres_factory, s3  # noqa: F401

__all__ = ["fault_dir"]


@pytest.fixture
def fault_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder where armed child processes drop their crash-point markers."""
    folder = tmp_path / "faults"
    folder.mkdir()
    yield folder
