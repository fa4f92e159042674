"""The fairness gate: group metrics per sensitive attribute, judged by bootstrap confidence intervals.

Groups. A categorical sensitive attribute groups rows by category. A numeric one is binned:
by the edges in `gates.fairness.bins`, else into `quantile_bins` quantile bins of the training
data (the holdout when the gate gets no training data), merged with neighbours until each bin
holds at least `min_group_size` rows; a numeric attribute with at most `quantile_bins` distinct
values is grouped by value. `gates.fairness.intersections` adds attributes made of the
combinations of two or more sensitive attributes (`sex=Female & age=25–40`), judged like the
others. The edges, labels and representative values used are in the report.

Metrics. For every grouping the gate reports fairlearn's `MetricFrame` by group and, over groups
with at least `min_group_size` rows, the demographic parity ratio and difference and the
equalized odds difference (regression: MAE by group and the worst/best MAE ratio). Each gated
metric is `pass` (its whole confidence interval inside the allowed band), `fail` (wholly
outside) or `inconclusive` (straddling the band's edge); `on_inconclusive` decides whether an
inconclusive metric holds the version for review (default), rejects it, or passes. Groups below
`min_group_size` are reported, not gated; an attribute left with fewer than two gated groups
fails, naming what to set. A counterfactual flip test (move each row to every other group:
another category, or another bin's median) and the SHAP attribution share of the sensitive
attributes are gated too; the label bias already present in the data (pre-training bias) is
reported only. Reasons say who is disadvantaged, by how much and what the labels themselves
show, in plain words, then the metric's technical name.

Bootstrap: groups are resampled separately (a stratified bootstrap keeps every group's size).
For classification every statistic depends only on each group's four confusion cells, so a
group's resample is drawn directly as multinomial cell counts: exactly the row bootstrap's
distribution, at a cost independent of the number of rows.

Modules: `groups` (groupings and bins), `judging` (one metric's interval, status and reason),
`metrics` (classification and regression group metrics with their bootstrap), `counterfactual`
(the flip test), `label_bias` (pre-training bias), `gate` (the decision and its report), `chart` (the
report drawn: group metrics and disparity metrics with their intervals and thresholds, a PNG beside it).
"""

from autopilot.gates.fairness.chart import fairness_chart
from autopilot.gates.fairness.counterfactual import counterfactual_flip_rate
from autopilot.gates.fairness.gate import GATE, evaluate_fairness
from autopilot.gates.fairness.groups import Grouping, build_groupings
from autopilot.gates.fairness.label_bias import pretraining_bias

__all__ = ["GATE", "Grouping", "build_groupings", "counterfactual_flip_rate", "evaluate_fairness", "fairness_chart",
           "pretraining_bias"]
