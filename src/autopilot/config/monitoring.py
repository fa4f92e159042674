"""The monitoring and alerts sections of a model config: drift, anomaly detection, retraining, Slack."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from autopilot.config.base import Frozen, Share
from autopilot.config.roots import confined
from autopilot.config.schedules import check_cron

__all__ = ["AlertsConfig", "AnomalyConfig", "BiasDriftConfig", "ChangedPredictionsConfig", "DriftConfig",
           "DriftMethod", "MonitoringConfig", "MultivariateDriftConfig", "RetrainConfig"]


DriftMethod = Literal["auto", "wasserstein", "jensenshannon", "psi"]


class MultivariateDriftConfig(Frozen):
    """The multivariate drift check: PCA data reconstruction, as NannyML (`monitoring.drift.multivariate`).

    It sees changes in how features move together (a correlation that weakens or flips) that
    leave each column's own distribution unchanged, which the per-column checks cannot see.
    """

    enabled: bool = Field(
        default=True, description="Fit the reconstruction check with each champion's reference and run it on each "
        "window with at least `min_rows` rows."
    )
    explained_variance: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.65, description="PCA keeps the fewest components explaining at least this share of the "
        "standardized reference's variance (NannyML's default 0.65)."
    )
    # Calibrated in tests/unit/test_drift_multivariate.py: at most 2 alarms in 50 undrifted
    # windows (Adult and a Gaussian frame); a correlation flip of two features is found.
    threshold_sd: Annotated[float, Field(gt=0)] = Field(
        default=3.0, description="A window drifted when its mean reconstruction error is further than this many "
        "standard deviations (of the mean error of a window of its size, from held-out reference rows) from the "
        "reference's mean error, either way (NannyML: 3), and by at least `min_error_change`."
    )
    # The effect-size floor, as the per-column checks have one: the sampling bound alone narrows
    # with the window, so large windows would alarm on differences nobody acts on. On Adult the
    # test file differs from the training file by +1.3% (same population, other people) and
    # weekend traffic mixtures (tests/reliability/test_r24) by +3 to +4%; breaking relationship's
    # tie to marital status and sex moves it +12%, a 0.8 -> -0.8 correlation flip +54%.
    min_error_change: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.06, description="A window drifted only when its mean reconstruction error also differs from the "
        "reference's by at least this share (relative, either way): the effect size below which a statistically "
        "clear change is still too small to act on."
    )
    action: Literal["alert", "retrain"] = Field(
        default="alert", description="What a detection does: alert (a person looks) or retrain (a refit on newer "
        "data, within the retrain budget)."
    )


class DriftConfig(Frozen):
    """How drift between the training reference and a window of served traffic is decided.

    Windows of at least the large-sample threshold (derived from the reference:
    `monitoring.drift.large_sample_rows`) are decided by effect sizes, not p-values (which flag
    everything at large n): normed Wasserstein distance for numeric columns, Jensen-Shannon
    distance for categorical ones (Evidently's own choices for large data), or PSI where
    configured. Smaller windows (down to `min_rows`) are decided by tests at `small_sample_alpha`.
    A drifted sensitive attribute is at least an alert, whatever its SHAP weight.
    """

    methods: dict[str, DriftMethod] = Field(
        default_factory=dict, description="Per-column method overrides; others use `auto`."
    )
    numeric_threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="Normed Wasserstein distance above which a numeric column drifted."
    )
    categorical_threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="Jensen-Shannon distance above which a categorical column drifted."
    )
    psi_threshold: Annotated[float, Field(gt=0)] = Field(default=0.2, description="PSI above which a column drifted.")
    prediction_threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="Normed Wasserstein distance of the prediction scores above which they drifted."
    )
    # Calibrated on Adult (tests/unit/test_drift.py): 0 alarms in 50 undrifted 2,000-row windows,
    # +0.5 sd on three important features retrains in 40/40 seeds (weighted share 0.28), one
    # important feature (age, share 0.17) moving 1 sd retrains, an unimportant one never does.
    weighted_share_alert: Share = Field(
        default=0.10, description="SHAP-importance-weighted share of drifted columns that raises an alert."
    )
    weighted_share_retrain: Share = Field(
        default=0.15, description="Weighted share of drifted columns that triggers retraining."
    )
    severe_weighted_share: Share = Field(
        default=0.6, description="Weighted share above which the retrain re-tunes instead of refitting."
    )
    # Effect sizes are biased upward by sampling noise in small windows (on Adult, 200-row
    # windows of undrifted traffic mostly alarm: Jensen-Shannon on a 41-category column ~0.15).
    # So effect sizes decide only from a large-sample threshold derived from the reference
    # (`drift.large_sample_rows`: the window size at which noise alone reaches no column's
    # threshold with more than `small_sample_alpha` per window; about 1,800 rows on Adult);
    # smaller windows are decided by tests, as Evidently switches to tests for small references.
    # Calibrated on Adult (tests/unit/test_drift_small.py): at most 2 alarms in 50 undrifted
    # 300-row windows.
    small_sample_alpha: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        default=0.01,
        description="False-alarm rate per window for windows below the large-sample threshold: their columns "
        "(and scores) are tested (two-sample Kolmogorov-Smirnov for numeric, chi-squared on category counts "
        "with sparse categories pooled), Holm-corrected so that noise flags any column with at most this "
        "probability. The same rate derives the threshold: effect sizes decide from the window size (given "
        "the reference's size and shape) at which noise alone crosses a column's threshold with at most this "
        "probability per window.",
    )
    min_rows: Annotated[int, Field(ge=10)] = Field(
        default=100,
        description="Absolute floor: a window with fewer rows decides nothing (reported as insufficient). Between "
        "it and the large-sample threshold, tests decide.",
    )
    bins: Annotated[int, Field(ge=5, le=1000)] = Field(default=20, description="Quantile bins for PSI.")
    report_max_rows: Annotated[int, Field(ge=100)] = Field(
        default=5000, description="Rows sampled (each side) for the Evidently HTML report."
    )
    evidently_report: bool = Field(
        default=True,
        description="Draw Evidently's HTML and JSON report for each window with enough traffic. It is for people: "
        "decisions never read it. Off saves its cost, 2-5 s and a few hundred MB per window on Adult.",
    )
    multivariate: MultivariateDriftConfig = Field(default_factory=MultivariateDriftConfig)


class AnomalyConfig(Frozen):
    """Adaptive anomaly detection on the metric series the monitor produces (no static thresholds)."""

    min_history: Annotated[int, Field(ge=3)] = Field(
        default=24, description="Points of history before any alarm (baselines need data)."
    )
    z_threshold: Annotated[float, Field(gt=0)] = Field(
        default=4.0, description="Robust z-score (median/MAD scale) that alarms on one point."
    )
    ewma_alpha: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.3, description="EWMA smoothing.")
    # 3.5 and 7 (not the textbook 3 and 5): measured on an hourly weekly-seasonal series, the
    # textbook limits gave 2.5 false alarms a month, these 0.5 (tests/unit/test_anomaly.py).
    ewma_threshold: Annotated[float, Field(gt=0)] = Field(
        default=3.5, description="EWMA of robust z-scores (in its own standard deviations) that alarms."
    )
    cusum_k: Annotated[float, Field(ge=0)] = Field(default=0.5, description="CUSUM slack, in robust sd.")
    cusum_h: Annotated[float, Field(gt=0)] = Field(default=7.0, description="CUSUM decision interval, in robust sd.")
    seasonality: Literal["none", "hour_of_day", "day_of_week", "hour_of_week"] = Field(
        default="none", description="Seasonal baseline: each point compared with history at the same phase."
    )
    cooldown_points: Annotated[int, Field(ge=0)] = Field(
        default=6, description="After an alarm on a series, this many points raise no new alarm."
    )


class RetrainConfig(Frozen):
    """When the monitor may retrain, and how."""

    enabled: bool = Field(default=True, description="Whether the monitor may trigger retraining at all.")
    max_per_day: Annotated[int, Field(ge=0)] = Field(default=2, description="Retrains triggered per 24 h, at most.")
    cooldown_hours: Annotated[float, Field(ge=0)] = Field(
        default=6.0, description="Hours after a triggered retrain during which no other is triggered."
    )
    performance_drop: Share = Field(
        default=0.05, description="Relative drop of the metric (realized or estimated) that triggers a re-tune."
    )
    window: Literal["sliding", "expanding"] = Field(
        default="sliding", description="Training window: recent labeled traffic replaces (sliding) or extends "
                                      "(expanding) the reference data."
    )
    window_days: Annotated[float, Field(gt=0)] = Field(default=30.0, description="Length of a sliding window.")
    retune_trials: Annotated[int, Field(ge=1)] = Field(default=10, description="Trials of a warm-started re-tune.")


class ChangedPredictionsConfig(Frozen):
    """The window report's predictions that changed most (explain/changed.py): each sampled window row
    paired with its nearest reference row, the champion's score compared, the largest changes explained."""

    top_n: Annotated[int, Field(ge=0, le=50)] = Field(
        default=5, description="Rows listed per window, by |score change| (0: the section is off)."
    )
    sample_rows: Annotated[int, Field(ge=10, le=100_000)] = Field(
        default=500, description="Window rows sampled (seeded) and paired with their nearest reference row."
    )
    reference_rows: Annotated[int, Field(ge=10, le=1_000_000)] = Field(
        default=5000, description="Reference rows sampled (seeded) to search for nearest neighbours in."
    )
    lime_num_samples: Annotated[int, Field(ge=50, le=20_000)] = Field(
        default=300, description="Perturbed rows LIME scores per listed row."
    )
    shift_rows: Annotated[int, Field(ge=10, le=100_000)] = Field(
        default=300, description="Sampled pairs whose mean SHAP change says what moved the window's scores "
                                 "as a whole (exact SHAP paths only)."
    )


class BiasDriftConfig(Frozen):
    """Bias drift: each window's fairness metrics by group against the values recorded at promotion.

    Selection rates by group (from predictions alone) are compared in every window with at least
    `min_rows` served rows; true and false positive rates and the equalized odds difference once
    `min_labeled_rows` rows have labels. A change is flagged only when it is significant (its
    interval excludes 0 at `confidence`, Bonferroni-corrected over every comparison of the
    window) and material (at least `min_effect`). A multiclass model is checked per class,
    one-vs-rest (the share predicted that class, its true and false positive rates). A regression
    model: each group's mean prediction (label-free) and, with labels, its MAE and the worst/best
    MAE ratio, material from `min_relative_effect` of the promoted value.
    """

    enabled: bool = Field(
        default=True, description="Compare the fairness metrics by group each window (needs sensitive_attributes)."
    )
    min_rows: Annotated[int, Field(ge=10)] = Field(
        default=500, description="Served rows a window needs before its selection rates (regression: mean "
        "predictions) by group are compared."
    )
    min_labeled_rows: Annotated[int, Field(ge=10)] = Field(
        default=300, description="Labeled rows a window needs before its true/false positive rates (regression: "
        "MAE by group and the worst/best MAE ratio) are compared."
    )
    min_group_rows: Annotated[int, Field(ge=5)] = Field(
        default=50,
        description="Rows a group needs, on both sides, for a rate to be compared (its positives for a true "
        "positive rate, its negatives for a false positive rate; its labeled rows for a regression MAE); smaller "
        "groups are reported as too small.",
    )
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = Field(
        default=0.95, description="Family-wise confidence of the window's comparisons (Bonferroni-corrected)."
    )
    min_effect: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.1, description="Classification: smallest absolute change of a rate or disparity that counts as "
        "material."
    )
    # Regression metrics have the target's scale, so an absolute floor means nothing there: a
    # share of the promoted value does (calibrated in tests/unit/test_bias_drift_tasks.py).
    min_relative_effect: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.1, description="Regression: smallest change that counts as material, as a share of the value at "
        "promotion (a group's MAE, the worst/best MAE ratio) or, for a group's mean prediction, of its prediction "
        "standard deviation at promotion (a mean near 0 makes a share of itself meaningless)."
    )
    bootstrap_samples: Annotated[int, Field(ge=200, le=100_000)] = Field(
        default=4000, description="Replicates for the intervals of the disparity metrics' changes (and of the "
        "worst/best MAE ratio's)."
    )
    action: Literal["alert", "retrain"] = Field(
        default="alert", description="What a flagged change leads to: an alert, or a retrain (refit) as well."
    )


class MonitoringConfig(Frozen):
    """The monitoring DAG of this model."""

    schedule: str | None = Field(
        default="@hourly", description="Cron expression or preset (@hourly, @daily, ...) in UTC; null: triggered only."
    )
    window_minutes: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Window length when the run has no data interval (manual triggers)."
    )
    labels_source: str | None = Field(
        default=None, description="CSV/Parquet of actual labels (request_id, row, label) besides /feedback."
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    changed_predictions: ChangedPredictionsConfig = Field(default_factory=ChangedPredictionsConfig)
    bias: BiasDriftConfig = Field(default_factory=BiasDriftConfig)

    @field_validator("labels_source")
    @classmethod
    def _check_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return confined(value, info)

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)


class AlertsConfig(Frozen):
    """Where DAG outcomes are announced."""

    slack_conn_id: str = Field(
        default="autopilot_slack",
        description="Airflow connection (type slackwebhook, the webhook URL as password) for outcome messages.",
    )
    skip_healthy: bool = Field(
        default=False, description="Send nothing for monitoring runs that found nothing (hourly runs add up)."
    )
    outbox_expiry_minutes: Annotated[int, Field(ge=1)] = Field(
        default=1440,
        description="How long a message Slack did not accept stays in the alert outbox, retried, before it is "
                    "dropped (logged with its key).",
    )
