"""`autopilot simulate`: realistic traffic with a chosen shift sent to a live endpoint, then its labels.

Real held-out rows (`data.test_source`, else `data.source`) are sampled, shifted by one
scenario and sent to `/predict` as a client would: batches of records over keep-alive
connections from a few threads, each request with its own `X-Request-ID`. Afterwards the
true labels (as changed by the scenario) go to `/feedback` for every answered request, so
the monitoring job sees both the drifted inputs and the realized performance.

Scenarios (`SCENARIOS`):

- `none`: a plain bootstrap resample; nothing should alarm.
- `covariate`: numeric features moved by `strength * 0.8` standard deviations.
- `categorical`: the category mix of one feature changed (its top category's share halved).
- `concept`: the labels of a subgroup flipped, features untouched: only performance can tell.
  A multiclass model's subgroup labels move to the next class (in sorted class order, the
  last to the first).
- `class_mix` (classification): the mix of the true classes changed, rows resampled so the most
  common class's share is halved (as `categorical` does to a feature): the predicted class
  distribution moves with it.
- `decorrelate`: the joint distribution broken, every column's own one kept: each chosen
  feature's values are permuted within the window, independently of the other columns
  (seeded), so its ties to the rest (Adult: relationship and marital status, which follow
  each other closely) are gone while each column holds exactly the same values. No per-column
  check can see it; the multivariate check (`monitoring.drift.multivariate`, PCA data
  reconstruction) is there for it. The model's scores move too when it uses the shuffled
  columns (Adult's champion uses both defaults: its score check alerts as well). Default
  columns: relationship and marital_status where both are features, else the two numeric
  features most correlated (|Pearson|) in the rows given. `strength` is the share of rows
  (the same rows for every column) whose values are shuffled (1.0 and above: all of them).

`autopilot simulate --scenario` offers all six.

Request ids are `sim-<scenario>-<seed>-<run tag>-<i>`; the run tag is random unless given, so
two runs never collide, while a run repeated with the same tag is refused by the inference log
(409, counted as failures) instead of counted twice.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd

from autopilot.config import Task

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig, ModelConfig

__all__ = ["SCENARIOS", "SimulationError", "SimulationResult", "run_simulation", "shift_frame"]

SCENARIOS = ("none", "covariate", "categorical", "concept", "class_mix", "decorrelate")
SHIFT_SD = 0.8  # covariate shift per unit of strength, in standard deviations
# Age, schooling and working hours: the Adult numeric features that matter most relative to
# their spread (capital gain/loss are mostly zero, fnlwgt is a sampling weight).
PREFERRED_NUMERIC = ("age", "education_num", "hours_per_week")
PREFERRED_CATEGORICAL = "relationship"
PREFERRED_SUBGROUP = ("sex", "Female")
# Adult's two categorical features that follow each other most closely (a husband is married):
# shuffled apart, the reconstruction error rises ~15% on 1,500 rows, per-column checks see nothing.
# Not sex: it is a sensitive attribute, and shuffling it would move the bias checks as well.
PREFERRED_DECORRELATE = ("relationship", "marital_status")
FEEDBACK_CHUNK = 200  # request ids per /feedback post: a few tens of kB, far below the body limit
TRANSPORT_ERROR = 0  # the status recorded for a request that got no HTTP answer at all


class SimulationError(RuntimeError):
    """The simulation cannot run: the data cannot be read, or the endpoint is unreachable or refuses the token."""


@dataclass
class SimulationResult:
    """What one simulation sent and what the endpoint answered.

    Attributes:
        scenario: the scenario simulated.
        requests: /predict requests sent; rows: rows sent in them.
        failed: requests not answered with 200 (they are counted, the run goes on).
        request_ids: the ids of the answered requests, in sending order.
        labelled_rows: rows the endpoint acknowledged labels for through /feedback.
        versions: model version -> rows it answered (a hot swap mid-run shows two).
        seconds: wall time of the whole run (predictions and feedback).
        shift: what the scenario changed, e.g. {"age": "+0.8 sd (+10.96)"}; empty for `none`.
        statuses: HTTP status -> count of failed requests and feedback posts (0: no HTTP answer).
        feedback_failed: /feedback posts not answered with 200.
        first_error: the first failure's message, to say why without reading the server log.
    """

    scenario: str
    requests: int
    rows: int
    failed: int
    request_ids: list[str]
    labelled_rows: int
    versions: dict[int, int]
    seconds: float
    shift: dict[str, Any]
    statuses: dict[int, int] = field(default_factory=dict)
    feedback_failed: int = 0
    first_error: str | None = None


# ---------------------------------------------------------------------------- shifting a frame


def shift_frame(frame: pd.DataFrame, cfg: ModelConfig, scenario: str, strength: float = 1.0, seed: int = 0, *,
                features: Sequence[str] | None = None,
                subgroup: tuple[str, Any] | None = None) -> tuple[pd.DataFrame, pd.Series, dict[str, Any]]:
    """Apply one drift scenario to canonical rows.

    Args:
        frame: canonical rows (`data.sources.canonicalize`) including the target column, no missing labels.
        cfg: the model config (features, their min/max, the target and its classes).
        scenario: one of `SCENARIOS`.
        strength: 1.0 is the documented shift; it scales the covariate shift, the category
            share removed (1.0 halves it, 2.0 removes it), the share of the subgroup
            whose labels flip and the share of rows decorrelate shuffles (at most all of them).
        seed: seeds every random choice, so the same arguments give the same rows.
        features: covariate: the numeric features to shift (default: age, education_num,
            hours_per_week where present, filled up with the first numeric features to three);
            categorical: the feature whose mix changes (default: relationship, else the first
            categorical feature); decorrelate: the features whose values are shuffled, each on
            its own (default: relationship and marital_status where both are features, else the
            two most correlated numeric features of `frame`).
        subgroup: concept: (feature, value) whose labels flip (default: sex == "Female", else
            the first category of the first sensitive attribute).

    Returns:
        The feature frame (config order, fresh RangeIndex), the labels as the endpoint serves
        them (class labels as strings; floats for regression) and what was changed.

    Raises:
        ValueError: unknown scenario, negative strength, missing columns or labels, or a
            chosen feature that cannot carry the scenario.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, not {strength}")
    target = cfg.target.column
    missing = [c for c in cfg.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the columns {missing}")
    if frame.empty:
        raise ValueError("the frame has no rows to shift")
    if frame[target].isna().any():
        raise ValueError(f"{int(frame[target].isna().sum())} rows have no label in {target!r}: drop them first")
    data = frame.loc[:, cfg.columns].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    shift: dict[str, Any] = {}
    if scenario == "none":
        data = data.iloc[rng.integers(0, len(data), len(data))].reset_index(drop=True)
    elif scenario == "covariate":
        data, shift = _shift_numeric(data, cfg, strength, features)
    elif scenario == "categorical":
        data, shift = _shift_categories(data, cfg, strength, rng, features)
    elif scenario == "decorrelate":
        data, shift = _decorrelate(data, cfg, strength, rng, features)
    elif scenario == "class_mix":
        if cfg.task is Task.REGRESSION:
            raise ValueError("the class_mix scenario needs a classification model")
        data, shift = _remix(data, target, strength, rng)
    else:
        data, shift = _shift_concept(data, cfg, strength, rng, subgroup)
    labels = data[target] if cfg.task is Task.REGRESSION else data[target].astype(str)
    return data.loc[:, list(cfg.features)].copy(), labels.rename(target), shift


def _shift_numeric(data: pd.DataFrame, cfg: ModelConfig, strength: float,
                   features: Sequence[str] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    numeric = cfg.numeric_features
    chosen = list(features) if features else _default_numeric(numeric)
    if not chosen:
        raise ValueError("the covariate scenario needs a numeric feature; the config has none")
    out = data.copy()
    shift: dict[str, Any] = {}
    for name in chosen:
        if name not in numeric:
            raise ValueError(f"covariate shift: {name!r} is not a numeric feature of the config")
        column = out[name]
        sd = float(column.std(skipna=True))
        if not math.isfinite(sd) or sd == 0.0:
            shift[name] = "not shifted (constant)"
            continue
        delta = strength * SHIFT_SD * sd
        moved = column + delta
        present = column.dropna()
        if len(present) and bool(np.all(np.mod(present.to_numpy(), 1.0) == 0.0)):
            moved = moved.round()  # an age of 49.96 would itself look like drift (and like a bug)
        spec = cfg.features[name]
        # Clipped to what validation allows, so the traffic stays valid; it also makes the
        # realized shift slightly smaller than asked near a bound.
        out[name] = moved.clip(lower=spec.min, upper=spec.max)
        shift[name] = f"{strength * SHIFT_SD:+.2g} sd ({delta:+.4g})"
    return out, shift


def _default_numeric(numeric: list[str]) -> list[str]:
    chosen = [n for n in PREFERRED_NUMERIC if n in numeric]
    chosen += [n for n in numeric if n not in chosen][: max(0, 3 - len(chosen))]
    return chosen


def _shift_categories(data: pd.DataFrame, cfg: ModelConfig, strength: float, rng: np.random.Generator,
                      features: Sequence[str] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    categorical = cfg.categorical_features
    if features:
        name = features[0]
        if name not in categorical:
            raise ValueError(f"categorical shift: {name!r} is not a categorical feature of the config")
    elif PREFERRED_CATEGORICAL in categorical:
        name = PREFERRED_CATEGORICAL
    elif categorical:
        name = categorical[0]
    else:
        raise ValueError("the categorical scenario needs a categorical feature; the config has none")
    return _remix(data, name, strength, rng)


def _remix(data: pd.DataFrame, name: str, strength: float,
           rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows resampled so the top level of column `name` keeps 1 - strength/2 of its share."""
    # Missing values are a level of their own: their share scales like any other non-top level.
    codes, levels = pd.factorize(data[name], use_na_sentinel=False)
    counts = np.bincount(codes, minlength=len(levels)).astype(float)
    n = len(data)
    present = [i for i, level in enumerate(levels) if not pd.isna(level)]
    if not present:
        raise ValueError(f"categorical shift: {name!r} has no values")
    top = max(present, key=lambda i: counts[i])
    old = counts / n
    if old[top] >= 1.0:
        raise ValueError(f"categorical shift: every row of {name!r} is {levels[top]!r}; no other category to favour")
    kept = old[top] * max(1.0 - 0.5 * strength, 0.0)
    new = old * (1.0 - kept) / (1.0 - old[top])  # the freed share goes to the others in proportion
    new[top] = kept
    # Exact counts (largest remainder), then rows drawn within each level: the realized mix is
    # the asked one, not one more random draw away from it.
    wanted = np.floor(new * n).astype(int)
    remainder = new * n - wanted
    for i in np.argsort(-remainder)[: n - int(wanted.sum())]:
        wanted[i] += 1
    picked = [rng.choice(np.flatnonzero(codes == i), size=k, replace=True)
              for i, k in enumerate(wanted) if k > 0]
    order = rng.permutation(np.concatenate(picked))
    shift = {name: f"{levels[top]} {old[top]:.1%} -> {wanted[top] / n:.1%}"}
    return data.iloc[order].reset_index(drop=True), shift


def _decorrelate(data: pd.DataFrame, cfg: ModelConfig, strength: float, rng: np.random.Generator,
                 features: Sequence[str] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each chosen column permuted on its own within the rows: each column keeps its values, their ties are gone."""
    n = len(data)
    if n < 2:
        raise ValueError("decorrelate: needs at least 2 rows to shuffle")
    chosen = list(features) if features else _default_decorrelate(data, cfg)
    unknown = [name for name in chosen if name not in cfg.features]
    if unknown:
        raise ValueError(f"decorrelate: {unknown} are not features of the config")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"decorrelate: a feature is named twice in {chosen}")
    for name in chosen:
        if data[name].nunique(dropna=False) < 2:
            raise ValueError(f"decorrelate: {name!r} holds a single value in these rows; shuffling it changes nothing")
    # A share of the rows (seeded, the same rows for every column) takes part, all of them from
    # strength 1.0 on; the others keep their ties. The values of a column are only moved between
    # rows, so its multiset, and thus its distribution, is unchanged.
    rows = np.arange(n) if strength >= 1.0 else np.sort(rng.choice(n, size=int(round(strength * n)), replace=False))
    out = data.copy()
    shift: dict[str, Any] = {}
    for name in chosen:
        values = out[name].to_numpy(copy=True)
        values[rows] = values[rng.permutation(rows)]
        out[name] = pd.Series(values, index=out.index, dtype=out[name].dtype)
        shift[name] = f"shuffled on its own in {len(rows)} of {n} rows"
    return out, shift


def _default_decorrelate(data: pd.DataFrame, cfg: ModelConfig) -> list[str]:
    if all(name in cfg.features for name in PREFERRED_DECORRELATE):
        return list(PREFERRED_DECORRELATE)
    numeric = [n for n in cfg.numeric_features if data[n].nunique() > 1]
    if len(numeric) < 2:
        raise ValueError("the decorrelate scenario's default needs two non-constant numeric features; name the "
                         "features to shuffle (features=...)")
    corr = data[numeric].astype(float).corr().abs().to_numpy()
    np.fill_diagonal(corr, -1.0)
    corr = np.nan_to_num(corr, nan=-1.0)
    i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return [numeric[min(i, j)], numeric[max(i, j)]]


def _shift_concept(data: pd.DataFrame, cfg: ModelConfig, strength: float, rng: np.random.Generator,
                   subgroup: tuple[str, Any] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    attr, value = subgroup if subgroup is not None else _default_subgroup(data, cfg)
    if attr not in cfg.features:
        raise ValueError(f"concept shift: {attr!r} is not a feature of the config")
    column = data[attr]
    mask = (column.astype(str) == str(value)) & column.notna()
    members = np.flatnonzero(mask.to_numpy())
    if strength < 1.0:  # a seeded share of the subgroup; all of it from 1.0 on
        members = np.sort(rng.choice(members, size=int(round(strength * len(members))), replace=False))
    target = cfg.target.column
    out = data.copy()
    if cfg.task is Task.REGRESSION:
        labels = out[target].astype(float)
        delta = strength * SHIFT_SD * float(labels.std())
        labels.iloc[members] += delta
        out[target] = labels.clip(lower=cfg.target.min, upper=cfg.target.max)
        return out, {target: f"{delta:+.4g} ({strength * SHIFT_SD:+.2g} sd) where {attr} == {value}"}
    labels = out[target].astype(str)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        classes = sorted({str(c) for c in (cfg.target.classes or [])} | set(labels.unique()))
        following = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
        labels.iloc[members] = labels.iloc[members].map(following)
        out[target] = labels
        return out, {target: f"moved to the next class where {attr} == {value} ({len(members)} of {len(out)} rows)"}
    positive = str(cfg.target.positive_class)
    negative = _negative_label(labels, cfg)
    current = labels.iloc[members]
    labels.iloc[members] = np.where(current == positive, negative, positive)
    out[target] = labels
    return out, {target: f"flipped where {attr} == {value} ({len(members)} of {len(out)} rows)"}


def _default_subgroup(data: pd.DataFrame, cfg: ModelConfig) -> tuple[str, Any]:
    attr, value = PREFERRED_SUBGROUP
    spec = cfg.features.get(attr)
    if spec is not None and spec.type == "categorical" and (
            value in (spec.categories or []) or bool((data[attr] == value).any())):
        return attr, value
    candidates = [*cfg.sensitive_attributes, *cfg.categorical_features]
    if not candidates:
        raise ValueError("the concept scenario needs a sensitive attribute or a categorical feature for its subgroup")
    attr = candidates[0]
    categories = cfg.features[attr].categories
    if categories:
        return attr, categories[0]
    values = sorted(data[attr].dropna().astype(str).unique())
    if not values:
        raise ValueError(f"concept shift: {attr!r} has no values to choose a subgroup from")
    return attr, values[0]


def _negative_label(labels: pd.Series, cfg: ModelConfig) -> str:
    """The class a flipped positive becomes: the configured other class, else the other one seen."""
    positive = str(cfg.target.positive_class)
    others = [str(c) for c in (cfg.target.classes or []) if str(c) != positive]
    if not others:
        others = sorted(set(labels.unique()) - {positive})
    # Serving names the negative class the same way when only the positive one is configured.
    return others[0] if len(others) == 1 else f"not {positive}"


# ---------------------------------------------------------------------------- sending it


@dataclass
class _Outcome:
    index: int
    status: int
    version: int | None = None
    error: str | None = None


def run_simulation(cfg: LoadedConfig, url: str, token: str, scenario: str, rows: int = 2000, batch: int = 10,
                   strength: float = 1.0, seed: int = 0, send_labels: bool = True, concurrency: int = 4,
                   timeout: float = 30.0, *, features: Sequence[str] | None = None,
                   subgroup: tuple[str, Any] | None = None, run_tag: str | None = None) -> SimulationResult:
    """Send `rows` held-out rows, shifted by `scenario`, to a live endpoint; then post their labels.

    Args:
        cfg: the model config; its `data.test_source` (else `data.source`) provides the rows.
        url: the endpoint's base URL, e.g. http://127.0.0.1:8090.
        token: the bearer token the endpoint expects.
        scenario, strength, seed, features, subgroup: as in `shift_frame` (the seed also
            draws the rows and names the requests `sim-<scenario>-<seed>-<run_tag>-<i>`).
        run_tag: part of the request ids (default: random, so separate runs never collide).
        rows: rows to send (drawn without replacement when the data has that many).
        batch: records per /predict request (at most `serving.max_batch_rows`).
        send_labels: post the true labels to /feedback for every answered request.
        concurrency: client threads, each with its own keep-alive connection.
        timeout: seconds per HTTP request.

    Returns:
        What was sent and answered; failed requests are counted, never retried.

    Raises:
        SimulationError: the data cannot be read, nothing answers at `url`, or the endpoint
            refuses the token.
        ValueError: an argument is out of range (see `shift_frame` too).
    """
    limit = cfg.deployment.serving.max_batch_rows
    if not 1 <= batch <= limit:
        raise ValueError(f"batch must be between 1 and serving.max_batch_rows ({limit}), not {batch}")
    if rows < 1 or concurrency < 1 or not timeout > 0:
        raise ValueError(f"rows and concurrency must be >= 1 and timeout > 0 (got {rows}, {concurrency}, {timeout})")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    start = time.monotonic()
    sample = _sample(cfg, rows, seed)
    features_frame, labels, shift = shift_frame(sample, cfg, scenario, strength, seed, features=features,
                                                subgroup=subgroup)
    records = _records(features_frame)
    label_values = labels.tolist()
    tag = run_tag or uuid.uuid4().hex[:8]
    chunks = [(f"sim-{scenario}-{seed}-{tag}-{i}", start_row, min(start_row + batch, len(records)))
              for i, start_row in enumerate(range(0, len(records), batch))]
    headers = {"Authorization": f"Bearer {token}"}
    base = url.rstrip("/")
    _check_endpoint(base, headers, timeout, cfg.deployment.serving.token_env)

    outcomes = _send(base, headers, timeout, concurrency, chunks, records)
    answered, statuses, versions, first_error = _tally(outcomes, chunks)

    labelled, feedback_failed = 0, 0
    if send_labels and answered:
        items = [{"request_id": chunks[i][0], "labels": label_values[chunks[i][1]:chunks[i][2]]} for i in answered]
        labelled, feedback_failed, error = _post_feedback(base, headers, timeout, items, statuses)
        first_error = first_error or error
    return SimulationResult(
        scenario=scenario, requests=len(chunks), rows=len(records), failed=len(chunks) - len(answered),
        request_ids=[chunks[i][0] for i in answered], labelled_rows=labelled, versions=dict(sorted(versions.items())),
        seconds=time.monotonic() - start, shift=shift, statuses=dict(sorted(statuses.items())),
        feedback_failed=feedback_failed, first_error=first_error)


def _tally(outcomes: Sequence[_Outcome], chunks: Sequence[tuple[str, int, int]]
           ) -> tuple[list[int], Counter[int], Counter[int], str | None]:
    """The answered requests (indexes), failures by status, rows by answering version, and the first error."""
    statuses: Counter[int] = Counter()
    versions: Counter[int] = Counter()
    answered: list[int] = []
    first_error: str | None = None
    for outcome in outcomes:
        if outcome.status == 200 and outcome.version is not None:
            answered.append(outcome.index)
            _, lo, hi = chunks[outcome.index]
            versions[outcome.version] += hi - lo
        else:
            statuses[outcome.status] += 1
            first_error = first_error or f"request {chunks[outcome.index][0]}: {outcome.error}"
    return answered, statuses, versions, first_error


def _sample(cfg: LoadedConfig, rows: int, seed: int) -> pd.DataFrame:
    """`rows` labelled canonical rows of the held-out data (the training data when there is none)."""
    from autopilot.data.sources import DataSourceError, canonicalize, read_frame

    location = cfg.resolve(cfg.data.test_source or cfg.data.source)
    try:
        frame = canonicalize(read_frame(location, cfg.data.format), cfg)
    except DataSourceError as exc:
        raise SimulationError(f"cannot read the rows to send: {exc}") from exc
    missing = frame.attrs.get("missing_columns") or []
    if missing:
        raise SimulationError(f"{location}: lacks the columns {missing} the config needs")
    # Rows without a label could be sent but never labelled: the simulation is about both.
    frame = frame[frame[cfg.target.column].notna()]
    if frame.empty:
        raise SimulationError(f"{location}: no labelled rows to send")
    return frame.sample(n=rows, replace=rows > len(frame), random_state=seed).reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records: plain Python values, None for NaN (the endpoint refuses NaN, as JSON does)."""
    columns = {name: frame[name].tolist() for name in frame.columns}
    out: list[dict[str, Any]] = []
    for i in range(len(frame)):
        record: dict[str, Any] = {}
        for name, values in columns.items():
            value = values[i]
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            record[name] = value
        out.append(record)
    return out


def _check_endpoint(base: str, headers: dict[str, str], timeout: float, token_env: str) -> None:
    """Fail before sending anything when nothing answers or the token is refused (every request would fail)."""
    try:
        answer = httpx.get(f"{base}/model", headers=headers, timeout=min(timeout, 10.0))
    except httpx.TransportError as exc:
        raise SimulationError(f"no serving endpoint answers at {base} ({exc}); start one with `autopilot serve`"
                              ) from exc
    if answer.status_code == 401:
        raise SimulationError(f"the endpoint at {base} refused the token (401): send the token `autopilot serve` "
                              f"was started with (its {token_env} variable)")
    if answer.status_code != 200:
        raise SimulationError(f"the endpoint at {base} answered /model with {answer.status_code}: "
                              f"{answer.text[:200]}")


def _send(base: str, headers: dict[str, str], timeout: float, concurrency: int,
          chunks: list[tuple[str, int, int]], records: list[dict[str, Any]]) -> list[_Outcome]:
    """POST every chunk from `concurrency` threads, each with its own keep-alive client; outcomes in chunk order."""
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(chunks)):
        work.put(i)
    outcomes: list[_Outcome | None] = [None] * len(chunks)

    def worker() -> None:
        # A client per thread: one connection each, reused for every request (keep-alive), and
        # no reliance on a client being safe to share between threads.
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                outcomes[i] = _predict(client, i, chunks[i], records)

    threads = [threading.Thread(target=worker, name=f"simulate-{n}", daemon=True)
               for n in range(min(concurrency, len(chunks)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [o if o is not None else _Outcome(i, TRANSPORT_ERROR, error="not sent") for i, o in enumerate(outcomes)]


def _predict(client: httpx.Client, index: int, chunk: tuple[str, int, int],
             records: list[dict[str, Any]]) -> _Outcome:
    request_id, lo, hi = chunk
    try:
        answer = client.post("/predict", json={"records": records[lo:hi]}, headers={"X-Request-ID": request_id})
    except httpx.HTTPError as exc:
        return _Outcome(index, TRANSPORT_ERROR, error=f"no answer: {type(exc).__name__}: {exc}")
    if answer.status_code != 200:
        return _Outcome(index, answer.status_code, error=f"{answer.status_code} {_message(answer)}")
    try:
        body = answer.json()
        return _Outcome(index, 200, version=int(body["model_version"]))
    except (ValueError, KeyError, TypeError) as exc:
        return _Outcome(index, 200, error=f"unreadable answer ({exc}): {answer.text[:200]}")


def _post_feedback(base: str, headers: dict[str, str], timeout: float,
                   items: list[dict[str, Any]], statuses: Counter[int]) -> tuple[int, int, str | None]:
    """Post the labels in chunks; returns (rows labelled, posts failed, first error)."""
    labelled, failed, first_error = 0, 0, None
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        for lo in range(0, len(items), FEEDBACK_CHUNK):
            part = items[lo:lo + FEEDBACK_CHUNK]
            try:
                answer = client.post("/feedback", json={"feedback": part})
            except httpx.HTTPError as exc:
                status, error = TRANSPORT_ERROR, f"no answer: {type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 200:
                    labelled += int(answer.json().get("labelled_rows", 0))
                    continue
                status, error = answer.status_code, f"{answer.status_code} {_message(answer)}"
            # A failed post may have labelled some of its requests already (each is its own
            # transaction on the server); the count above then misses them, which is the safe side.
            failed += 1
            statuses[status] += 1
            first_error = first_error or f"feedback for {part[0]['request_id']}...: {error}"
    return labelled, failed, first_error


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("error", answer.text))[:300]
    except (ValueError, AttributeError):  # not JSON, or JSON without an "error" key
        return answer.text[:300]
