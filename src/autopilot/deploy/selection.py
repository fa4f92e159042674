"""Pick the cheapest instance type and replica count that meet a model's service level.

Sizing model (worker processes per replica, `serving.pool`; every number comes from the model's `Profile`):

* workers per replica = one per vCPU, as many as fit in the instance memory less 0.5 GiB kept
  for the operating system at the per-worker memory need below (at least one);
* capacity per replica = the best single-row (batch 1) throughput measured at a core count not
  above the instance's vCPUs, scaled linearly by vcpu / max-measured when the instance has more
  vCPUs than were measured (an extrapolation: extra cores are used by extra workers), by
  workers / vCPUs when memory allows fewer workers than vCPUs, and by `baseline_cpu_fraction`
  for burstable types; then divided by the latency correction (a model observed 2x slower
  serves half the rows) and by the headroom;
* replicas = max(min_replicas, ceil(peak_rps / capacity));
* memory need per worker = peak RSS x memory correction x headroom; one worker must fit, and
  the replica's need is that times its workers;
* predicted p95 = profiled single-row p95 x latency correction; above the SLO, the model is
  rejected on every instance (instance speed differences are not modelled);
* cost = hourly price x replicas; the cheapest feasible wins, ties go to fewer replicas.

Corrections come from history: after a deployment, observed p95 latency and memory are recorded
against what was predicted (`deploy.history`, in the state database); the median
observed/predicted ratio of a model's observations multiplies later predictions for that model.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field

from autopilot.config import ServiceLevelConfig
from autopilot.deploy.profile import OS_RESERVED_MB, Profile, workers_that_fit


class InstanceType(BaseModel):
    """One instance type with its on-demand price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vcpu: Annotated[int, Field(ge=1)]
    memory_gib: Annotated[float, Field(gt=0)]
    hourly_usd: Annotated[float, Field(gt=0)]
    baseline_cpu_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    sagemaker: bool = True  # offered by SageMaker hosting as ml.<name>


class InstanceCatalog(BaseModel):
    """The instance types a deployment may use, with where and when the prices were taken."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str
    source: str
    prices_taken: str
    instances: Annotated[list[InstanceType], Field(min_length=1)]


DEFAULT_CATALOG = Path(__file__).with_name("instances.yaml")


def load_catalog(path: Path = DEFAULT_CATALOG) -> InstanceCatalog:
    """Read and validate an instance catalog (the bundled default is `deploy/instances.yaml`)."""
    return InstanceCatalog.model_validate(yaml.safe_load(Path(path).read_text()))


class Observation(BaseModel):
    """What a deployment was predicted to need against what it was seen to need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    instance: str
    predicted_p95_ms: float
    observed_p95_ms: float
    predicted_rss_mb: float
    observed_rss_mb: float
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Correction(BaseModel):
    """Multipliers learned from observations (1.0 = predictions were right)."""

    latency: float = 1.0
    memory: float = 1.0
    observations: int = 0


def correction_from(history: list[Observation] | None, model: str | None = None) -> Correction:
    """Median observed/predicted ratio, for latency and memory separately, over valid (> 0) pairs."""
    obs = [o for o in history or [] if model is None or o.model == model]
    lat = [o.observed_p95_ms / o.predicted_p95_ms for o in obs if o.observed_p95_ms > 0 and o.predicted_p95_ms > 0]
    mem = [o.observed_rss_mb / o.predicted_rss_mb for o in obs if o.observed_rss_mb > 0 and o.predicted_rss_mb > 0]
    return Correction(latency=statistics.median(lat) if lat else 1.0,
                      memory=statistics.median(mem) if mem else 1.0, observations=len(obs))


class Candidate(BaseModel):
    """One instance type as sized for the model, with its verdict."""

    instance: InstanceType
    replicas: int
    hourly_cost: float
    predicted_p95_ms: float
    capacity_rps: float
    memory_need_mb: float  # per replica: every worker process's footprint
    extrapolated: bool
    verdict: str  # "chosen" or why it lost
    workers: int = 1  # serving worker processes per replica (`Profile.workers_for`)

    @property
    def feasible(self) -> bool:
        """Whether the candidate meets memory and latency."""
        return self.verdict == "chosen" or self.verdict.startswith(("more expensive", "same cost"))


class Selection(BaseModel):
    """The chosen environment and every candidate considered."""

    chosen: Candidate
    candidates: list[Candidate]
    service_level: ServiceLevelConfig
    correction: Correction
    prices_taken: str

    def explain(self) -> str:
        """A human-readable account of the choice and why each other candidate lost."""
        c, sl = self.chosen, self.service_level
        lines = [
            f"chosen: {c.replicas} x {c.instance.name} at ${c.hourly_cost:.4f}/h "
            f"(prices taken {self.prices_taken}); predicted p95 {c.predicted_p95_ms:.2f} ms "
            f"<= SLO {sl.p95_latency_ms:g} ms, capacity {c.capacity_rps * c.replicas:.1f} rps "
            f"for peak {sl.peak_rps:g} rps with headroom {sl.headroom:g}, memory {c.memory_need_mb:.0f} MiB",
        ]
        if self.correction.observations:
            lines.append(f"corrected from {self.correction.observations} observations: latency "
                         f"x{self.correction.latency:.2f}, memory x{self.correction.memory:.2f}")
        for cand in self.candidates:
            if cand is not self.chosen and cand.instance.name != c.instance.name:
                lines.append(f"  {cand.instance.name}: {cand.verdict}")
        return "\n".join(lines)


def sagemaker_candidate(selection: Selection) -> Candidate:
    """The chosen candidate if SageMaker hosts its type, else the cheapest feasible one it does host.

    Raises:
        NoFeasibleEnvironment: when no feasible candidate is a SageMaker type.
    """
    if selection.chosen.instance.sagemaker:
        return selection.chosen
    hosted = [c for c in selection.candidates if c.feasible and c.instance.sagemaker]
    if not hosted:
        raise NoFeasibleEnvironment("no feasible instance type is offered by SageMaker hosting")
    return min(hosted, key=lambda c: (c.hourly_cost, c.replicas, c.instance.name))


class NoFeasibleEnvironment(ValueError):
    """No instance type meets the service level; the message says why each one lost."""


def _capacity(profile: Profile, inst: InstanceType) -> tuple[float, bool]:
    """Single-row rows per second one replica sustains, and whether it was extrapolated.

    A replica can always limit its threads, so the best measured throughput at any core count
    up to the instance's vCPUs counts (on an oversubscribed profiling host, two OpenMP threads can
    be far slower than one). Beyond the largest measured count it is scaled linearly per vCPU.
    """
    measured = sorted(profile.cores_measured) or sorted(int(c) for c in profile.throughput_rps)
    usable = [c for c in measured if c <= inst.vcpu] or [measured[0]]
    rps = max(profile.throughput(c, 1) for c in usable)
    extrapolated = inst.vcpu > measured[-1]
    if extrapolated:
        rps *= inst.vcpu / measured[-1]
    return rps * inst.baseline_cpu_fraction, extrapolated


def _size(inst: InstanceType, profile: Profile, sl: ServiceLevelConfig, corr: Correction, p95: float,
          memory_mb: float, require_sagemaker: bool) -> Candidate:
    """One instance type sized for the model: workers, capacity, replicas, memory; `verdict` empty if feasible."""
    raw, extrapolated = _capacity(profile, inst)
    available_mb = inst.memory_gib * 1024.0 - OS_RESERVED_MB
    # A worker per vCPU, as many as fit: fewer workers than vCPUs serve proportionally less.
    workers = workers_that_fit(inst.vcpu, available_mb, memory_mb)
    capacity = raw * workers / inst.vcpu / corr.latency / sl.headroom
    replicas = max(sl.min_replicas, math.ceil(sl.peak_rps / capacity)) if capacity > 0 else 0
    if require_sagemaker and not inst.sagemaker:
        verdict = "not offered by SageMaker hosting"
    elif memory_mb > available_mb:
        verdict = f"too little memory: needs {memory_mb:.0f} MiB, has {max(available_mb, 0):.0f} MiB after the OS"
    elif p95 > sl.p95_latency_ms:
        verdict = f"latency above SLO: predicted p95 {p95:.2f} ms > {sl.p95_latency_ms:g} ms"
    elif capacity <= 0:
        verdict = "no measured throughput"
    else:
        verdict = ""
    return Candidate(instance=inst, replicas=replicas, hourly_cost=inst.hourly_usd * replicas,
                     predicted_p95_ms=p95, capacity_rps=capacity, memory_need_mb=memory_mb * workers,
                     extrapolated=extrapolated, verdict=verdict, workers=workers)


def select_environment(profile: Profile, service_level: ServiceLevelConfig, catalog: InstanceCatalog,
                       history: list[Observation] | None = None, model: str | None = None,
                       require_sagemaker: bool = False) -> Selection:
    """Size every instance type for the model and choose the cheapest that meets the service level.

    Args:
        profile: the model's measured serving cost.
        service_level: the model config's `deployment.service_level`.
        catalog: the instance types and prices.
        history: past observations; only `model`'s are used when `model` is given.
        model: the model name to filter `history` by.
        require_sagemaker: only types SageMaker hosting offers (the `aws` target).

    Raises:
        NoFeasibleEnvironment: when no instance type qualifies; the message names every
            candidate's reason.
    """
    sl = service_level
    corr = correction_from(history, model)
    p95 = profile.latency_ms["p95"] * corr.latency
    memory_mb = profile.peak_rss_mb * corr.memory * sl.headroom
    sized = [_size(inst, profile, sl, corr, p95, memory_mb, require_sagemaker) for inst in catalog.instances]
    feasible = [c for c in sized if not c.verdict]
    if not feasible:
        reasons = "; ".join(f"{c.instance.name}: {c.verdict}" for c in sized)
        raise NoFeasibleEnvironment(f"no instance type meets the service level ({reasons})")
    best = min(feasible, key=lambda c: (c.hourly_cost, c.replicas, c.instance.name))
    final: list[Candidate] = []
    for c in sized:
        if c is best:
            verdict = "chosen"
        elif c.verdict:
            verdict = c.verdict
        elif c.hourly_cost > best.hourly_cost:
            verdict = (f"more expensive than the chosen: {c.replicas} x ${c.instance.hourly_usd:g} = "
                       f"${c.hourly_cost:.4f}/h > ${best.hourly_cost:.4f}/h")
        else:
            verdict = f"same cost ${c.hourly_cost:.4f}/h but not preferred ({c.replicas} replicas)"
        final.append(c.model_copy(update={"verdict": verdict}))
    chosen = next(c for c in final if c.verdict == "chosen")
    return Selection(chosen=chosen, candidates=final, service_level=sl, correction=corr,
                     prices_taken=catalog.prices_taken)
