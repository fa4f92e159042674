"""Schedule values in a config: `check_cron` accepts what Airflow's cron timetable accepts, or says why not."""

from __future__ import annotations

__all__ = ["CRON_PRESETS", "check_cron"]

# Airflow's cron presets (`airflow.timetables` maps each to a cron expression).
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


def check_cron(value: str) -> str:
    """Return `value` when it is a cron preset or an expression Airflow can schedule.

    For any schedule key (`monitoring.schedule`, a training schedule): the same check as
    Airflow's cron timetable (`croniter` must read it), so a config that validates also parses
    as a DAG; `'0 25 * * *'` and `'every hour'` are refused here instead of at DAG parse.

    Raises:
        ValueError: a sentence without the key (the caller's location names it), with examples.
    """
    if value in CRON_PRESETS:
        return value
    from croniter import croniter  # light; imported here so a config without a cron never pays for it

    if not isinstance(value, str) or not value.strip() or not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression or preset; use e.g. '@hourly', '@daily' or "
                         "'*/15 * * * *' (minute hour day-of-month month day-of-week, in UTC)")
    return value
