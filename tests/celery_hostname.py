"""Airflow `hostname_callable` for the scale-out test: the Celery worker's own name.

Two Celery workers on one machine share its hostname; each records its name on the task
instances it runs, so the test can see that mapped tuning tasks ran on different workers.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    """`AUTOPILOT_CELERY_WORKER` in a Celery worker's processes, else the machine's name."""
    return os.environ.get("AUTOPILOT_CELERY_WORKER") or socket.getfqdn()
