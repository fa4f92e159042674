"""SHAP attributions on the ORIGINAL (pre-encoding) features, a capability shared by the
explainability gate, serving's `/explain` and monitoring's attribution drift.

Three ways to get per-row SHAP values (`choice.prepare_path` picks one; `Attributions.path_reason`
says why):

- `tree` (exact, fast; `explain.tree`, with the project's own HistGradientBoosting conversion in
  `explain.hgb_trees`): RandomForest / ExtraTrees / HistGradientBoosting explained on the
  transformed matrix, attributions summed back onto the original features (`explain.columns`).
- `linear` (exact, instant; `explain.linear`): logistic regression (binary) and the linear
  regressors, interventional SHAP in closed form.
- `permutation` (model-agnostic; `explain.permutation`): the whole pipeline on raw rows with
  shap's PermutationExplainer, taken by `auto` only when neither exact path applies.

Multiclass models are explained for every class (`Attributions.class_values`); features rank by
mean |SHAP| over rows and classes, and `class_answer` gives serving's answer (each row explained
for its predicted class, every class's values beside it).

`explain.engine` explains rows (`shap_attributions`) or a model within the config's bounds
(`explain_model`); `explain.rankings` ranks features by mean |SHAP| and compares two rankings by
nDCG@k; `explain.plots` writes the plots and the importance JSON.
"""

from autopilot.explain.attributions import Attributions, class_answer
from autopilot.explain.choice import METHODS
from autopilot.explain.engine import PILOT_ROWS, explain_model, shap_attributions
from autopilot.explain.plots import write_plots
from autopilot.explain.rankings import ndcg_at_k, ranked, top_shares

__all__ = [
    "METHODS",
    "PILOT_ROWS",
    "Attributions",
    "class_answer",
    "explain_model",
    "ndcg_at_k",
    "ranked",
    "shap_attributions",
    "top_shares",
    "write_plots",
]
