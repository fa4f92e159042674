"""What the Models page adds for a multiclass model: its class list and readable metric names.

A multiclass version carries its labels, in the order of its probabilities, as the JSON list in
its `autopilot.classes` tag (`class_list`); the champion/challenger table shows them in a
`classes` row (`classes_row`). Multiclass metric names get their plain meaning beside the
technical name (`metric_label`); binary and regression names are shown as they are. The
fairness gate reports each class of each sensitive attribute as an attribute of its own
(`sex [class high]`), so `ui.gated` lists its per-class rows without help from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape

from autopilot.modeling.multiclass import CLASSES_TAG

__all__ = ["CLASSES_TAG", "METRIC_LABELS", "class_list", "classes_row", "metric_label"]

METRIC_LABELS = {
    "roc_auc_ovr": "ROC AUC, one-vs-rest macro",
    "f1_macro": "F1, macro over classes",
    "balanced_accuracy": "mean recall per class",
}
SHOWN_CLASSES = 12  # beyond this the row says how many more (up to 50 classes are allowed)


def class_list(tags: Mapping[str, str]) -> list[str]:
    """A version's class labels from its `autopilot.classes` tag (empty when absent or unreadable)."""
    raw = tags.get(CLASSES_TAG)
    if not raw:
        return []
    try:
        labels = json.loads(raw)
    except ValueError:
        return []
    return [str(label) for label in labels] if isinstance(labels, list) else []


def metric_label(name: str) -> str:
    """A metric's name for the page, with its plain meaning when it is a multiclass metric (not escaped)."""
    meaning = METRIC_LABELS.get(name)
    return f"{name} ({meaning})" if meaning else name


def classes_row(columns: Sequence[Iterable[str]]) -> str:
    """The `classes` row of the champion/challenger table (empty when no version is multiclass)."""
    lists = [list(labels) for labels in columns]
    if not any(lists):
        return ""
    cells = "".join(f"<td>{_shown(labels)}</td>" for labels in lists)
    return f'<tr class="classes"><th>classes</th>{cells}</tr>'


def _shown(labels: list[str]) -> str:
    if not labels:
        return "–"
    more = len(labels) - SHOWN_CLASSES
    text = ", ".join(escape(label) for label in labels[:SHOWN_CLASSES])
    return f"{len(labels)}: {text}" + (f" and {more} more" if more > 0 else "")
