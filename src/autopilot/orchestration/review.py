"""The training DAG's `review` task: a `review` decision becomes an approval in Airflow's UI.

`VersionReview` is the standard provider's human-in-the-loop operator (`HITLOperator`, options
`Approve` / `Reject`, an optional `comment`). On Airflow 3.3 it parks the task in the
`awaiting_input` state (no trigger, no triggerer): the request shows under "Required actions",
and the answer arrives through the UI or the HITL REST API
(`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails`). The
scheduler enforces `gates.review.timeout_hours`, read from the model config when the task runs.

* decision `promote` (or no decision): the task skips itself at once; `promote` runs as before.
* `airflow dags test`: nobody can answer a test run, which would wait forever,
  so the task skips, saying how to approve by hand (`autopilot promote`); nothing is promoted.
* an answer: `Approve` returns an `approved` `Approval` naming the reviewer
  (`airflow-user:<name>`), which `promote` uses as the alias move's actor; `Reject` is recorded
  on the version (tags) and `promote` promotes nothing. Either way the run's note says who
  answered (`v3 rejected by alice in review`); `promote` then writes the final one.
* no answer in time: recorded, and the task fails (no retry) saying nothing was promoted.
* a retry after the answer was recorded (Airflow 3.3 can retry a resumed task whose executor event
  arrived late, seen on a loaded machine): the recorded answer is returned, nobody is asked twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from autopilot.task_ids import TaskId

__all__ = ["DAG_TEST_USER", "OPTIONS", "VersionReview"]

# `autopilot.pipeline.review.APPROVE` / `REJECT`: not imported here, since the DAG parser builds this
# operator and that module's imports reach MLflow (a unit test checks they agree).
OPTIONS = ["Approve", "Reject"]
DAG_TEST_USER = "dag_test"  # the `triggering_user_name` of a run made by `dag.test()` / `airflow dags test`


class VersionReview(HITLOperator):
    """Ask a person to approve or reject a version the gates held for review."""

    def __init__(self, *, config_path: str, model: str, **kwargs: Any) -> None:
        # The DAG's own params (the trigger form), which Airflow hands every operator: BaseOperator merges
        # them in again, and HITLOperator keeps only the task's (the reviewer's form) for the request.
        kwargs.pop("params", None)
        super().__init__(
            subject=f"Review a version of {model}", body=None, options=list(OPTIONS), multiple=False,
            params={"comment": Param("", type="string", title="Comment",
                                     description="Why: recorded as the reason of the promotion or rejection")},
            **kwargs)
        self.config_path = config_path
        self.model = model

    def _decided(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        decided = context["ti"].xcom_pull(task_ids=TaskId.DECIDE.value)
        return dict(decided) if decided else None

    def _config(self) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from autopilot.config import ConfigError, check_name_matches_file, load_config

        try:
            cfg = load_config(self.config_path)
            check_name_matches_file(cfg, self.model, self.config_path)
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc
        return cfg

    def execute(self, context: Any) -> Any:
        """Skip unless the decision is `review`; else ask, with the decision's subject, body and timeout."""
        from airflow.sdk.exceptions import AirflowSkipException

        from autopilot.pipeline.review import pending, review_request

        decided = self._decided(context)
        if not decided or decided.get("decision") != "review":
            raise AirflowSkipException(f"decision {(decided or {}).get('decision')!r}: no review needed")
        cfg = self._config()
        if getattr(context["dag_run"], "triggering_user_name", None) == DAG_TEST_USER:
            raise AirflowSkipException(f"a test run (airflow dags test) cannot wait for a reviewer: "
                                       f"{pending(cfg, decided).reason}")
        answer = self._answered_before(context, cfg, decided)
        if answer is not None:
            return answer
        request = review_request(cfg, decided)
        self.subject, self.body = request.subject, request.body
        self.response_timeout = timedelta(hours=cfg.gates.review.timeout_hours)
        self.log.info("%s: waiting up to %g h for a reviewer (Airflow UI: Required actions)", request.subject,
                      cfg.gates.review.timeout_hours)
        return super().execute(context)

    def _answered_before(self, context: Any, cfg: Any, decided: dict[str, Any]) -> dict[str, Any] | None:
        """A retry of this run's review after its answer was recorded: that answer, not a second question."""
        from airflow.sdk.exceptions import AirflowFailException

        from autopilot.orchestration.signing import task_settings
        from autopilot.pipeline.review import recorded_review

        answer = recorded_review(cfg, task_settings(), decided, context["dag_run"].run_id)
        if answer is None:
            return None
        self.log.info("version %s already %s on review in this run by %s: %s", answer.version, answer.outcome,
                      answer.actor, answer.reason)
        if answer.outcome == "timed_out":
            raise AirflowFailException(answer.reason)
        return answer.to_xcom()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """The answer (or the timeout): recorded on the version; an approval goes on to `promote`."""
        from airflow.sdk.exceptions import AirflowFailException

        from autopilot.orchestration.signing import task_settings
        from autopilot.pipeline.review import answered, record_review, timed_out

        decided = self._decided(context) or {}
        cfg = self._config()
        settings = task_settings()
        if event.get("error_type") == "timeout":
            approval = timed_out(decided, cfg.gates.review.timeout_hours)
            record_review(cfg, settings, approval, context["dag_run"].run_id)
            self._note(context, settings, approval.to_xcom())
            raise AirflowFailException(approval.reason)
        payload = super().execute_complete(context, event)  # validates the options and the form
        params = payload.get("params_input") or {}
        approval = answered(decided, list(payload["chosen_options"]), payload.get("responded_by_user"),
                            params.get("comment"))
        record_review(cfg, settings, approval, context["dag_run"].run_id)
        self.log.info("version %s %s by %s: %s", approval.version, approval.outcome, approval.actor, approval.reason)
        self._note(context, settings, approval.to_xcom())
        return approval.to_xcom()

    @staticmethod
    def _note(context: Any, settings: Any, approval: dict[str, Any]) -> None:
        """The run's note after the answer: `v3 rejected by alice in review`, `v3 approved by alice ...`,
        or held for review when nobody answered in time (`promote` updates it after an approval)."""
        from autopilot.orchestration.notes import write_training_note

        fallback = f"v{approval.get('version')} {approval.get('outcome')} in review: {approval.get('reason')}"
        write_training_note(context, settings, approval=approval, fallback=fallback)
