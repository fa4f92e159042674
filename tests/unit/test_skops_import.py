"""skops.io is imported without flooding an Airflow task's log with deprecation warnings.

At import, skops.io looks up every scipy.special ufunc's name in every loaded module; in an
Airflow task process, Airflow's deprecated-import shims warn on each lookup (1,160 task-log lines
and ~18 s of a busy training task). `registry.common.skops_io` silences exactly those.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import PROJECT

COUNT = """
import warnings
import airflow.sdk, airflow.models, airflow.utils.timezone, airflow.serialization.serde  # a task process's shims
seen = []
warnings.showwarning = lambda message, category, *rest, **kw: seen.append((category.__name__, str(message)))
warnings.simplefilter("always")
{load}
warnings.warn("after the import, warnings still show", UserWarning)
print(sum(1 for _, text in seen if text.startswith("The `airflow.")), seen[-1][1])
"""


def airflow_warnings(load: str) -> tuple[int, str]:
    """Run `load` in a fresh interpreter holding Airflow's shims; the Airflow warnings shown, and the last warning."""
    out = subprocess.run([sys.executable, "-c", COUNT.format(load=load)], capture_output=True, text=True,
                         cwd=PROJECT, timeout=300, check=True).stdout.strip().splitlines()[-1]
    count, last = out.split(" ", 1)
    return int(count), last


def test_the_adapter_imports_skops_without_airflow_deprecation_warnings() -> None:
    flood, _ = airflow_warnings("import skops.io")
    assert flood > 100  # the fault is real: a plain import floods
    quiet, last = airflow_warnings("from autopilot.adapters.registry.common import skops_io; sio = skops_io(); "
                                   "assert sio.load and sio is skops_io()")
    assert quiet == 0
    assert last == "after the import, warnings still show"  # the filter ends with the import
