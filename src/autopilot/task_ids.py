"""The task ids of the training and the monitoring DAG, as one enum.

The DAG factory builds its tasks under these ids; `autopilot run` names a failed stage by them;
the outcome messages read what each task returned by them. Standard library only: the DAG
parser imports it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TaskId"]


class TaskId(StrEnum):
    """The task ids of the training and the monitoring DAG."""

    # training
    VALIDATE = "validate"
    SNAPSHOT = "snapshot"
    PLAN_TUNING = "plan_tuning"
    TUNE_WORKER = "tune_worker"
    TUNE = "tune"
    TRAIN_AND_REGISTER = "train_and_register"
    QUALITY = "quality"
    EXPLAINABILITY_AND_FAIRNESS = "explainability_and_fairness"
    INFRA = "infra"
    DECIDE = "decide"
    REVIEW = "review"
    SHADOW = "shadow"
    PROMOTE = "promote"
    PLAN_DEPLOYMENT = "plan_deployment"
    DEPLOY = "deploy"
    ROLLOUT = "rollout"
    # monitoring
    MONITOR = "monitor"
    BRANCH = "branch"
    TRIGGER_RETRAINING = "trigger_retraining"
    ALERT = "alert"
    HEALTHY = "healthy"
    DRAIN_ALERTS = "drain_alerts"
