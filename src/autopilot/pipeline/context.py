"""What the training tasks share: who runs them (`RunContext`), and what they hand each other.

Each task returns a small reference that travels through XCom as a JSON-safe dict (the
assignments, the snapshots, the registered version, ...). Each kind has a frozen dataclass
here. `to_xcom()` gives exactly the dict the task returns and `from_xcom()` reads one back. A
reference is also that dict itself, read-only (`Reference`), so `registered["version"]`,
`json.dumps(registered)` and `registered == {...}` work as they did when the stages returned
plain dicts; `registered.version` is the typed way to read it. A stage function accepts either
form (`coerce`).

`from_xcom` is lenient: a key the dict does not have takes the field's default. Callers (and
tests) hand-build partial dicts holding only what the stage they call reads; a default is
never read on the path that dict takes.

A stage's MLflow run (`stage_run`) lives here too: it is found again by the run's idempotency
key (`RunContext.key`), so a retry or rerun resumes it rather than starting a second one. It
yields a `RunHandle` that logs to that run in the stage's store (`registry.connect(settings)`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from autopilot.adapters.registry import IDEMPOTENCY_TAG

if TYPE_CHECKING:
    from autopilot.adapters.registry import Registry, RunHandle
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = [
    "Approval",
    "Decision",
    "Deployment",
    "DeploymentPlan",
    "ExplainabilityAndFairness",
    "GateSummary",
    "Promotion",
    "QualitySummary",
    "Reference",
    "RegisteredVersion",
    "RolloutResult",
    "RunContext",
    "Skipped",
    "ShadowVerdict",
    "SnapshotRef",
    "Snapshots",
    "TunedResult",
    "TuningAssignment",
    "TuningWork",
    "ValidatedBatch",
    "ValidatedBatches",
    "coerce",
    "coerce_step",
    "experiment_name",
    "plain",
    "stage_run",
]


@dataclass(frozen=True)
class RunContext:
    """Who is running the pipeline: the DAG run (or CLI invocation) behind every side effect."""

    run_id: str
    dag_id: str = ""
    actor: str = "autopilot"
    # Set for a refit or retune: {"strategy": "refit"|"retune", "reason", and, when the monitoring
    # loop asked for it, "window_start", "window_end"}. None for a regular run.
    retrain: dict[str, Any] | None = None
    n_trials: int | None = None  # this run's trial budget, instead of the config's
    source: str | None = None  # the batch a data event named, instead of `data.source`
    skip_known_data: bool = False  # a scheduled or data-triggered run: data already trained on ends it

    def key(self, cfg: LoadedConfig, stage: str) -> str:
        """The idempotency key of one stage of this run."""
        return f"{cfg.name}/{self.run_id}/{stage}"


def experiment_name(cfg: LoadedConfig) -> str:
    """The MLflow experiment holding every run of a model."""
    return f"autopilot/{cfg.name}"


@contextmanager
def stage_run(registry: Registry, cfg: LoadedConfig, settings: Settings, ctx: RunContext,
              stage: str) -> Iterator[RunHandle]:
    """Start, or resume after a retry, the MLflow run of one stage of one DAG run; yield its handle.

    The run ends FINISHED, or FAILED when the block raises (as `mlflow.start_run` ends it).
    """
    experiment_id = registry.ensure_experiment(experiment_name(cfg), settings.mlflow_artifact_root)
    key = ctx.key(cfg, stage)
    existing = registry.find_run(experiment_id, key)
    tags = {
        IDEMPOTENCY_TAG: key,
        "autopilot.model": cfg.name,
        "autopilot.stage": stage,
        "autopilot.dag_id": ctx.dag_id,
        "autopilot.dag_run_id": ctx.run_id,
        "autopilot.actor": ctx.actor,
    }
    run_id = existing.info.run_id if existing else None
    with registry.start_run(experiment_id, run_id=run_id, run_name=stage, tags=tags) as run:
        yield run


# ---------------------------------------------------------------------------- the base


class Reference(dict[str, Any]):
    """A frozen dataclass that is also its own XCom dict (read-only).

    Subclasses are `@dataclass(frozen=True, eq=False, repr=False, kw_only=True)`: equality and
    printing stay the dict's, so a reference equals (and prints as) the dict it stands for. By
    default the XCom dict holds the fields in their order; a kind whose dict differs (nested
    references, renamed or optional keys) overrides `to_xcom` and `from_xcom`.
    """

    def __post_init__(self) -> None:
        dict.update(self, self.to_xcom())  # the dict's content, fixed once (the fields are frozen)

    def to_xcom(self) -> dict[str, Any]:
        """The JSON-safe dict the task returns through XCom."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """Read a reference back from its dict (a missing key takes the field's default)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in data.items() if key in names})

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only: it is what a task handed on")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (and copied) as its dict: the dict's own pickling would write through __setitem__.
        return type(self).from_xcom, (self.to_xcom(),)


R = TypeVar("R", bound=Reference)


def coerce(value: Mapping[str, Any], kind: type[R]) -> R:
    """`value` as a `kind` reference: itself, or read from the XCom dict it is."""
    return value if isinstance(value, kind) else kind.from_xcom(value)


def coerce_step(value: Mapping[str, Any], kind: type[R]) -> R | Skipped:
    """Like `coerce`, for the output of a stage that may have had nothing to do (`Skipped`)."""
    return coerce(value, Skipped) if value.get("skipped") else coerce(value, kind)


def plain(value: Any) -> Any:
    """A stage's result as XCom carries it: references as their dicts, a list item by item."""
    if isinstance(value, Reference):
        return value.to_xcom()
    if isinstance(value, list):
        return [plain(item) for item in value]
    return dict(value) if isinstance(value, Mapping) else value


def _refs(values: Mapping[str, Any], kind: type[R]) -> dict[str, R]:
    return {name: coerce(value, kind) for name, value in values.items()}


def _dicts(values: Mapping[str, Reference]) -> dict[str, dict[str, Any]]:
    return {name: value.to_xcom() for name, value in values.items()}


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class ValidatedBatch(Reference):
    """One validated batch: where it was read, the digest validation saw, its report."""

    source: str
    digest: str | None = None
    rows: int = 0
    report_uri: str = ""


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class ValidatedBatches(Reference):
    """`validate`'s output: the data stage's MLflow run and each validated batch by split."""

    data_run_id: str = ""
    batches: dict[str, ValidatedBatch] = field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        """`{"data_run_id", "batches": {split: {source, digest, rows, report_uri}}}`."""
        return {"data_run_id": self.data_run_id, "batches": _dicts(self.batches)}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """Read back, each batch too."""
        return cls(data_run_id=data.get("data_run_id", ""), batches=_refs(data.get("batches", {}), ValidatedBatch))


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class SnapshotRef(Reference):
    """One stored snapshot (`autopilot.data.snapshot.Snapshot.as_ref()`)."""

    digest: str
    uri: str = ""
    key: str = ""
    source: str = ""
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    schema: dict[str, str] = field(default_factory=dict)
    created: bool = False


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Snapshots(Reference):
    """`snapshot`'s output: the data stage's MLflow run and each batch's snapshot by split.

    Splits: `train`, `test` when the config names a test source, and `recent` in a retrain
    (labeled served rows that join the training data).
    """

    data_run_id: str = ""
    snapshots: dict[str, SnapshotRef] = field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        """`{"data_run_id", "snapshots": {split: Snapshot.as_ref()}}`."""
        return {"data_run_id": self.data_run_id, "snapshots": _dicts(self.snapshots)}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """Read back, each snapshot too."""
        return cls(data_run_id=data.get("data_run_id", ""), snapshots=_refs(data.get("snapshots", {}), SnapshotRef))


# ---------------------------------------------------------------------------- tuning and training


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class TuningAssignment(Reference):
    """One tuning worker's share of the study (`study_name` None: a refit, nothing to search)."""

    study_name: str | None
    worker: int
    n_workers: int = 1
    n_trials: int = 0
    strategy: str | None = None


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class TuningWork(Reference):
    """What one tuning worker did: how many trials it started."""

    worker: int
    n_new: int


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class TunedResult(Reference):
    """`tune`'s output: the winning parameters (`best_value` None for a refit, which searched nothing)."""

    tune_run_id: str
    study_name: str
    best_params: dict[str, Any]
    best_value: float | None = None
    n_trials: int = 0


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class RegisteredVersion(Reference):
    """`train_and_register`'s output: the model version (`registry.ModelRef.as_ref()`) and its test metrics."""

    name: str
    version: int
    run_id: str = ""
    model_uri: str = ""
    source: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- gates and promotion


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class GateSummary(Reference):
    """One gate's verdict (the full report is stored under `gates/` on the version's run)."""

    name: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    requires_review: bool = False


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class QualitySummary(GateSummary):
    """The quality gate's verdict, with the champion it compared against (None: a first run)."""

    champion_version: int | None = None


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class ExplainabilityAndFairness(Reference):
    """The combined task's two verdicts."""

    explainability: GateSummary
    fairness: GateSummary

    def to_xcom(self) -> dict[str, Any]:
        """`{"explainability": summary, "fairness": summary}`."""
        return {"explainability": self.explainability.to_xcom(), "fairness": self.fairness.to_xcom()}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """Read back, both summaries too."""
        return cls(explainability=coerce(data["explainability"], GateSummary),
                   fairness=coerce(data["fairness"], GateSummary))


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Decision(Reference):
    """`decide`'s output: the verdict (`promote`, `review`; a `reject` fails the task instead)."""

    decision: str
    reasons: list[str] = field(default_factory=list)
    version: int = 0
    champion_version: int | None = None


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Approval(Reference):
    """`review`'s output: a person's answer on a version held for review.

    `outcome`: `approved`, `rejected`, `timed_out` (nobody answered in `gates.review.timeout_hours`)
    or `pending` (`autopilot run`: nobody to ask in process). `actor` names the reviewer
    (`airflow-user:<name>`); `reason` is their comment, or says what happened.
    """

    outcome: str
    version: int = 0
    actor: str | None = None
    reason: str = ""


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Promotion(Reference):
    """`promote`'s output: whether `champion` moved to the version.

    Promoted: `{"promoted": True, "decision", "version", "from", "retired"}` (the champion it
    replaced, the versions retention retired). Not promoted: `{"promoted": False, "decision",
    "version", "reasons"}`.
    """

    promoted: bool
    decision: str | None = None
    version: int | None = None
    reasons: list[str] = field(default_factory=list)
    from_version: int | None = None
    retired: list[int] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        """The dict of its case (promoted or not)."""
        if not self.promoted:
            return {"promoted": False, "decision": self.decision, "version": self.version, "reasons": self.reasons}
        return {"promoted": True, "decision": self.decision, "version": self.version, "from": self.from_version,
                "retired": self.retired}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """Read back either case."""
        return cls(promoted=bool(data.get("promoted")), decision=data.get("decision"), version=data.get("version"),
                   reasons=data.get("reasons", []), from_version=data.get("from"), retired=data.get("retired", []))


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class ShadowVerdict(Reference):
    """`shadow`'s output: what the shadow phase found (`autopilot.pipeline.shadow`).

    `outcome`: `off` (shadow disabled), `not_promotable` (the decision promotes nothing anyway),
    `no_champion` (a first run: nothing to shadow against), `waiting` (not enough shadow traffic
    yet: the DAG task looks again later), `pending` (`autopilot run`: still waiting when its
    bounded wait ended), `compared` (the second opinion is in the decision record) or
    `too_few_labels` (`max_hours` passed without enough labeled shadow rows). `hold`: promote
    must not move `champion` (a `review` or `reject` from `on_worse` / `on_too_few_labels`, or
    pending); `decision` is what the shadow phase says then. `opinion` is the comparison's
    verdict (better, equivalent, worse, inconclusive, undefined) when there was one.
    """

    outcome: str
    version: int = 0
    hold: bool = False
    decision: str | None = None
    opinion: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        """Whether the shadow phase needs another look."""
        return self.outcome == "waiting"


# ---------------------------------------------------------------------------- deployment


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Skipped(Reference):
    """A deployment stage with nothing to do (not promoted, no live endpoint); the DAG shows it as skipped."""

    skipped: bool = True
    reason: str


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class DeploymentPlan(Reference):
    """`plan_deployment`'s output, also stored with the version (`deploy/plan.json`)."""

    skipped: bool = False
    model: str = ""
    version: int
    run_id: str = ""
    target: str = ""
    instance: str = ""
    replicas: int = 0
    hourly_usd: float = 0.0
    predicted_p95_ms: float = 0.0
    predicted_rss_mb: float = 0.0
    endpoint: str = ""
    sagemaker_model: str = ""
    endpoint_config: str = ""
    config_files: dict[str, str] = field(default_factory=dict)
    region: str | None = None


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Deployment(Reference):
    """`deploy`'s output. On `local` the endpoint follows the alias by itself (no package, no
    SageMaker fields); on `aws` it names the package, the endpoint config and the rollback alarms."""

    skipped: bool = False
    target: str
    version: int = 0
    endpoint: str = ""
    action: str = ""
    package: str = ""
    sha256: str = ""
    endpoint_config: str = ""
    status: str = ""
    alarms: list[str] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        """The dict of its target."""
        if self.target != "aws":
            return {"skipped": False, "target": self.target, "version": self.version, "endpoint": self.endpoint,
                    "action": self.action}
        return {"skipped": False, "target": "aws", "version": self.version, "package": self.package,
                "sha256": self.sha256, "endpoint": self.endpoint, "endpoint_config": self.endpoint_config,
                "action": self.action, "status": self.status, "alarms": self.alarms}


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class RolloutResult(Reference):
    """`rollout`'s output when the new version passed its smoke test and bake."""

    skipped: bool = False
    passed: bool = True
    version: int
    metrics: dict[str, Any] = field(default_factory=dict)
