"""One native call for a whole HistGradientBoosting forest on a micro-batch.

scikit-learn predicts tree by tree: one Cython call per tree, each paying ~4 µs of argument
conversion and an OpenMP region whatever the row count. For the served Adult model (124
trees) that is ~0.8 ms per micro-batch of 1 to 32 rows, more than everything else a request
costs in the batch thread. Here every tree is joined under a routing tree into one node array,
and each (row, tree) pair becomes a row of the input with the tree's number in an extra column:
the routing nodes (numeric splits on that column, a balanced binary search) send the pair to
its tree's root, and scikit-learn's own `_predict_from_raw_data` walks all pairs in one call
(measured: 156 µs for 10 rows, 23 µs for 1, against ~800 µs).

The leaf values are then added in scikit-learn's order (baseline, then tree after tree, per
class: `np.cumsum` accumulates sequentially), so the scores are the same floats, not an
approximation; `serving.compiled` proves that on every model before it is used, and anything
unexpected leaves the model on scikit-learn's loop. Batches over `MAX_ROWS` rows, or whose
replicated input would exceed `MAX_CELLS`, use the loop too: large batches already amortize its
per-call cost (each pair also walks ~7 routing nodes, so past ~150 rows the loop is faster).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MAX_CELLS", "MAX_ROWS", "FlatForest"]

MAX_ROWS = 128  # past this, scikit-learn's loop is as fast (measured crossover ~150 rows, 124 trees)
MAX_CELLS = 1 << 20  # input cells (pairs x features) one call may replicate: 8 MB of float64


class FlatForest:
    """A fitted HGB's trees as one node array behind a routing tree (see the module docstring)."""

    def __init__(self, estimator: Any, width: int) -> None:
        """`estimator`: a fitted HistGradientBoosting model; `width`: its input's column count."""
        iterations = estimator._predictors
        self.classes = int(estimator.n_trees_per_iteration_)
        self.iterations = len(iterations)
        self.trees = self.iterations * self.classes
        self.width = width
        self.baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(-1)
        self.known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        # The extra column (the tree's number) is numeric: its entry in the categorical map is never read.
        self.f_idx_map = np.concatenate([f_idx_map, np.zeros(1, dtype=f_idx_map.dtype)])
        self.nodes, self.bitsets = _join([p for per_iteration in iterations for p in per_iteration], width)
        self.tree_ids = np.arange(self.trees, dtype=np.float64)

    def fits(self, rows: int) -> bool:
        """Whether a batch of `rows` rows goes through the joined forest (else scikit-learn's loop)."""
        return 0 < rows <= MAX_ROWS and rows * self.trees * (self.width + 1) <= MAX_CELLS

    def raw(self, features: np.ndarray, n_threads: int) -> np.ndarray:
        """The raw predictions, shape (rows, classes): baseline plus every tree's leaf value, in order."""
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data

        rows = features.shape[0]
        pairs = np.empty((rows, self.trees, self.width + 1), dtype=np.float64)
        pairs[:, :, :self.width] = features[:, None, :]
        pairs[:, :, self.width] = self.tree_ids
        out = np.empty(rows * self.trees, dtype=np.float64)
        _predict_from_raw_data(self.nodes, pairs.reshape(rows * self.trees, self.width + 1), self.bitsets,
                               self.known, self.f_idx_map, n_threads, out)
        # (iterations + 1, rows, classes): the baseline first, then each iteration's trees, summed in that order.
        terms = np.empty((self.iterations + 1, rows, self.classes), dtype=np.float64)
        terms[0] = self.baseline
        terms[1:] = out.reshape(rows, self.iterations, self.classes).transpose(1, 0, 2)
        return np.asfortranarray(np.cumsum(terms, axis=0)[-1])


def _join(predictors: list[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
    """All trees' nodes after `len(predictors) - 1` routing nodes, and their categorical bitsets, re-indexed."""
    routing = max(len(predictors) - 1, 0)
    parts, bitsets, roots = [], [], []
    offset, bitset_offset = routing, 0
    for predictor in predictors:
        nodes = predictor.nodes.copy()
        inner = nodes["is_leaf"] == 0  # a leaf's children are unused zeros: left as they are
        nodes["left"][inner] += offset
        nodes["right"][inner] += offset
        nodes["bitset_idx"][(nodes["is_categorical"] != 0) & inner] += bitset_offset
        roots.append(offset)
        offset += len(nodes)
        bitset_offset += len(predictor.raw_left_cat_bitsets)
        parts.append(nodes)
        bitsets.append(predictor.raw_left_cat_bitsets)
    route = np.zeros(routing, dtype=parts[0].dtype)
    _route(route, roots, width, 0, len(roots), [0])
    joined_bitsets = np.ascontiguousarray(np.concatenate(bitsets), dtype=bitsets[0].dtype)
    return np.concatenate([route, *parts]), joined_bitsets


def _route(route: np.ndarray, roots: list[int], column: int, low: int, high: int, used: list[int]) -> int:
    """Fill routing nodes sending tree numbers [low, high) to their roots; return the subtree's node index."""
    if high - low == 1:
        return roots[low]
    index = used[0]
    used[0] += 1
    middle = (low + high) // 2
    route["feature_idx"][index] = column
    route["num_threshold"][index] = middle - 0.5  # numbers below `middle` go left
    route["left"][index] = _route(route, roots, column, low, middle, used)
    route["right"][index] = _route(route, roots, column, middle, high, used)
    return index
