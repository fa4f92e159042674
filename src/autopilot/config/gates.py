"""The gates section of a model config: the thresholds of the quality, explainability, fairness and infra gates."""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator

from autopilot.config.base import Frozen, Share, listed_once

__all__ = ["Baseline", "Confidence", "ExplainabilityGateConfig", "FairnessGateConfig", "GatesConfig",
           "InfraGateConfig", "OnInconclusive", "QualityGateConfig", "ReviewConfig"]

# What a gate does with an interval straddling its bound (quality and fairness alike).
OnInconclusive = Literal["review", "fail", "pass"]
Confidence = Annotated[float, Field(gt=0.5, lt=1.0)]


Baseline = Literal["prior", "linear"]


class QualityGateConfig(Frozen):
    """Quality: absolute floors, and non-inferiority against the champion on the same holdout."""

    min_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute floors on test metrics (lower-is-better metrics use max_metrics).",
    )
    max_metrics: dict[str, float] = Field(
        default_factory=dict, description="Absolute ceilings on test metrics, e.g. rmse."
    )
    non_inferiority_margin: Annotated[float, Field(ge=0.0)] = Field(
        default=0.005,
        description="How much worse than the champion on `metric` (in metric units) still counts as not worse.",
    )
    bootstrap_samples: Annotated[int, Field(ge=100, le=100_000)] = Field(
        default=1000, description="Bootstrap resamples of the test set for the champion comparison."
    )
    confidence: Confidence = Field(default=0.95, description="Confidence level of the comparison's interval.")
    first_run: Literal["promote", "require_review"] = Field(
        default="promote",
        description="With no champion yet: promote a version that passes every other check, or hold it for review.",
    )
    first_run_baselines: list[Baseline] = Field(
        default_factory=lambda: list(get_args(Baseline)),
        description="With no champion yet, the model is compared on `metric` with these, each fitted on the same "
        "training split and scored on the same holdout: it must surely beat `prior` (the training class rate; "
        "regression: the training mean; whole bootstrap interval of the difference above 0) and be no worse than "
        "`linear` (a logistic regression, regression: ridge, with default regularization on the same features) "
        "by more than `non_inferiority_margin`. [] turns it off.",
    )
    on_inconclusive: OnInconclusive = Field(
        default="review",
        description="A comparison (with the champion or a first-run baseline) whose interval straddles its bound "
        "proves neither pass nor fail: `review` holds the version for a human, `fail` rejects it, `pass` lets "
        "it through (the status stays in the report).",
    )

    @field_validator("first_run_baselines")
    @classmethod
    def _unique_baselines(cls, value: list[Baseline]) -> list[Baseline]:
        return listed_once(value, "baselines")


class ExplainabilityGateConfig(Frozen):
    """SHAP explainability: bounded cost, stability against the champion, leakage check."""

    max_rows: Annotated[int, Field(ge=10)] = Field(default=2000, description="Rows explained (sampled, seeded).")
    max_seconds: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="Time budget per explained model (any SHAP path); rows shrink to fit it."
    )
    background_rows: Annotated[int, Field(ge=5)] = Field(
        default=50,
        description="Background sample for the linear and model-agnostic paths (the tree path needs none).",
    )
    top_k: Annotated[int, Field(ge=1)] = Field(default=5, description="k of the nDCG@k ranking stability.")
    min_ndcg: Share = Field(default=0.9, description="Lowest nDCG@k of the importance ranking against the champion.")
    max_feature_share: Share = Field(
        default=0.5, description="Leakage check: the most any one feature may carry of all attribution."
    )
    # LIME beside SHAP (explain/lime_tabular.py): reported in the gate's details, gated only when set.
    lime_rows: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=20, description="Holdout rows explained by LIME too, for the LIME/SHAP agreement (0: not measured)."
    )
    lime_num_samples: Annotated[int, Field(ge=50, le=20_000)] = Field(
        default=300, description="Perturbed rows LIME scores per row of the agreement."
    )
    min_lime_agreement: Share | None = Field(
        default=None,
        description="Lowest mean Jaccard overlap of LIME's and SHAP's top-k features per row; null (default): "
                    "the agreement is reported, never gated.",
    )


class FairnessGateConfig(Frozen):
    """Fairness per sensitive attribute, judged by bootstrap confidence intervals.

    An interval-judged metric passes when its whole interval lies inside the allowed band, fails
    when it lies wholly outside, and is inconclusive when it straddles the band's edge
    (`on_inconclusive` decides what that means for the gate).
    """

    min_group_size: Annotated[int, Field(ge=1)] = Field(
        default=30,
        description="Groups smaller than this are reported, not gated; an attribute with fewer than two groups "
                    "this large on the holdout (after binning) fails the gate.",
    )
    demographic_parity_ratio_min: Share | None = Field(
        default=0.8,
        description="Band floor of the demographic parity ratio: pass when its whole CI is at or above this, fail "
                    "when wholly below, else inconclusive (null: report only).",
    )
    demographic_parity_difference_max: Share | None = Field(
        default=None,
        description="Band ceiling of the demographic parity difference: pass when its whole CI is at or below this, "
                    "fail when wholly above, else inconclusive (null: report only).",
    )
    equalized_odds_difference_max: Share | None = Field(
        default=None,
        description="Band ceiling of the equalized odds difference: pass when its whole CI is at or below this, "
                    "fail when wholly above, else inconclusive (null: report only).",
    )
    max_group_error_ratio: Annotated[float, Field(ge=1.0)] | None = Field(
        default=None,
        description="Regression: band ceiling of the worst/best group MAE ratio, judged by its CI like the others.",
    )
    on_inconclusive: OnInconclusive = Field(
        default="review",
        description="A metric whose CI straddles its band: `review` holds the version for a human (the gate fails "
                    "with requires_review unless something failed outright), `fail` rejects, `pass` lets it through "
                    "(the status stays in the report).",
    )
    bins: dict[str, Annotated[list[float], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Inner bin edges per numeric sensitive attribute, strictly increasing: {age: [25, 40, 60]} "
                    "gives the groups <25, 25–40, 40–60, >=60 (a bin holds its lower edge).",
    )
    quantile_bins: Annotated[int, Field(ge=2, le=20)] = Field(
        default=4,
        description="Numeric sensitive attributes without `bins`: this many quantile bins of the training data, "
                    "merged with neighbours until each holds at least min_group_size rows (a numeric attribute "
                    "with at most this many distinct values is grouped by value).",
    )
    intersections: list[Annotated[list[str], Field(min_length=2)]] = Field(
        default_factory=list,
        description="Intersectional groups, each a list of 2+ sensitive attributes ([sex, age]): their "
                    "combinations are judged like one more attribute.",
    )
    max_counterfactual_flip_rate: Share | None = Field(
        default=0.1, description="Fail when changing a sensitive attribute flips more predictions than this."
    )
    max_sensitive_attribution_share: Share | None = Field(
        default=0.2, description="Fail when sensitive attributes carry more than this share of SHAP attribution."
    )
    bootstrap_samples: Annotated[int, Field(ge=50, le=100_000)] = Field(
        default=500, description="Bootstrap resamples behind each fairness interval."
    )
    confidence: Confidence = Field(default=0.95, description="Confidence level of the fairness intervals.")
    threshold: Share = Field(default=0.5, description="Decision threshold turning scores into selections.")

    @field_validator("bins")
    @classmethod
    def _increasing(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for attr, edges in value.items():
            if not all(math.isfinite(edge) for edge in edges):
                raise ValueError(f"{attr!r}: every edge must be a finite number, got {edges}")
            if any(low >= high for low, high in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"{attr!r}: edges must be strictly increasing, got {edges}")
        return value

    @field_validator("intersections")
    @classmethod
    def _distinct(cls, value: list[list[str]]) -> list[list[str]]:
        for entry in value:
            if len(set(entry)) != len(entry):
                raise ValueError(f"{entry} names an attribute more than once")
        if len({tuple(entry) for entry in value}) != len(value):
            raise ValueError("an entry is listed more than once")
        return value


class InfraGateConfig(Frozen):
    """Infra validation: load the version as serving will, query it, measure it."""

    sample_rows: Annotated[int, Field(ge=1)] = Field(
        default=200, description="Rows of the holdout sent to the loaded model to measure it."
    )
    max_load_seconds: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Fail when loading the version as serving does takes longer than this."
    )
    max_p95_latency_ms: Annotated[float, Field(gt=0)] = Field(
        default=1000.0, description="Fail when the 95th percentile latency of a prediction exceeds this (ms)."
    )
    max_peak_memory_mb: Annotated[float, Field(gt=0)] = Field(
        default=4096.0, description="Fail when loading and predicting needs more memory than this (MB)."
    )


class ReviewConfig(Frozen):
    """A `review` decision in the training DAG: an approval in Airflow's "Required actions"."""

    timeout_hours: Annotated[float, Field(gt=0, le=24 * 365)] = Field(
        default=72.0,
        description="How long the DAG run's `review` task waits for a reviewer to approve or reject a version "
        "held for review; with no answer by then nothing is promoted, the version keeps `challenger` (still "
        "promotable by hand with `autopilot promote`) and the task fails saying so.",
    )


class GatesConfig(Frozen):
    """Thresholds the promotion gates enforce."""

    quality: QualityGateConfig = Field(default_factory=QualityGateConfig)
    explainability: ExplainabilityGateConfig = Field(default_factory=ExplainabilityGateConfig)
    fairness: FairnessGateConfig = Field(default_factory=FairnessGateConfig)
    infra: InfraGateConfig = Field(default_factory=InfraGateConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
