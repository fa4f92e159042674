"""Fairness of a multiclass model: every class judged one-vs-rest, like a binary model's positive class.

For class k, a row is "selected" when the model predicts k (the most probable class) and
"positive" when its label is k. The binary machinery then applies unchanged
(`metrics.classification_outcome`): selection rates by group with their intervals, the demographic
parity ratio and difference, and equalized odds (true and false positive rates of class k by
group), each judged by its bootstrap interval against the configured thresholds. Each class of
each grouping is reported as an attribute of its own, named `<attribute> [class <label>]`, so
every reason names the class, the group and the metric.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from autopilot.config import FairnessGateConfig
from autopilot.gates.fairness.groups import Grouping
from autopilot.gates.fairness.judging import Outcome
from autopilot.gates.fairness.metrics import classification_outcome

__all__ = ["class_grouping_name", "label_texts", "multiclass_outcomes"]


def class_grouping_name(attribute: str, label: str) -> str:
    """How one class of one grouping is named in the report (`sex [class high]`)."""
    return f"{attribute} [class {label}]"


def label_texts(values: np.ndarray | list[object]) -> np.ndarray:
    """Labels as text, numeric spellings unified (1, 1.0 and "1" are all "1"), as classes are compared."""
    from autopilot.modeling.multiclass import label_text

    return np.asarray([label_text(v) for v in np.asarray(values, dtype=object).tolist()], dtype=object)


def multiclass_outcomes(grouping: Grouping, groups: np.ndarray, y: np.ndarray, probabilities: np.ndarray,
                        classes: list[str], fc: FairnessGateConfig,
                        rng: np.random.Generator) -> list[tuple[str, Outcome]]:
    """One outcome per class: (its report name, the one-vs-rest outcome of that class).

    Args:
        y: the labels (any spelling of the classes).
        probabilities: rows x classes, columns in `classes` order (the model's `classes_`).
        classes: the class labels as text.
    """
    if probabilities.ndim != 2 or probabilities.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match {len(classes)} classes")
    predicted = np.argmax(probabilities, axis=1)
    labels = label_texts(y)
    # The class indicator is the score; 0.5 separates 0 from 1 whatever the configured threshold
    # (a binary decision threshold has no meaning for the most probable class).
    onevsrest = fc.model_copy(update={"threshold": 0.5})
    out = []
    for k, label in enumerate(classes):
        name = class_grouping_name(grouping.name, label)
        positive = (labels == label).astype(float)
        selected = (predicted == k).astype(float)
        found = classification_outcome(replace(grouping, name=name), groups, positive, selected, onevsrest, rng)
        found.details["class"] = label
        out.append((name, found))
    return out
