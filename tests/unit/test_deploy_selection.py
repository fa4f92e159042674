from __future__ import annotations

from typing import Any

import pytest

from autopilot.config import ServiceLevelConfig
from autopilot.deploy.profile import Profile
from autopilot.deploy.selection import (
    DEFAULT_CATALOG,
    InstanceCatalog,
    InstanceType,
    NoFeasibleEnvironment,
    Observation,
    load_catalog,
    select_environment,
)

CATALOG_PATH = DEFAULT_CATALOG


def profile(p95: float = 10.0, rps1: float = 100.0, rss: float = 1000.0) -> Profile:
    """A synthetic profile: `rps1` single-row rows/s at one core and at two."""
    return Profile(artifact_bytes=1_000_000, load_seconds=0.1, peak_rss_mb=rss,
                   latency_ms={"p50": p95 / 2, "p95": p95, "p99": p95 * 1.2},
                   throughput_rps={"1": {"1": rps1, "64": rps1 * 20}, "2": {"1": rps1, "64": rps1 * 35}},
                   cores_measured=[1, 2])


def catalog() -> InstanceCatalog:
    return InstanceCatalog(region="us-east-1", source="test", prices_taken="2024-06-01", instances=[
        InstanceType(name="tiny", vcpu=2, memory_gib=1, hourly_usd=0.01),
        InstanceType(name="small", vcpu=2, memory_gib=4, hourly_usd=0.08),
        InstanceType(name="big", vcpu=8, memory_gib=32, hourly_usd=0.40),
    ])


def sl(**kw: float) -> ServiceLevelConfig:
    base: dict[str, float] = {"p95_latency_ms": 50.0, "peak_rps": 100.0, "min_replicas": 1, "headroom": 1.0}
    return ServiceLevelConfig.model_validate(base | kw)


def test_cheapest_feasible_is_chosen_and_losers_say_why() -> None:
    sel = select_environment(profile(), sl(), catalog())
    assert sel.chosen.instance.name == "small" and sel.chosen.replicas == 1
    assert sel.chosen.hourly_cost == pytest.approx(0.08)
    verdicts = {c.instance.name: c.verdict for c in sel.candidates}
    assert verdicts["tiny"].startswith("too little memory")
    assert verdicts["big"].startswith("more expensive than the chosen")
    text = sel.explain()
    assert "1 x small" in text and "tiny: too little memory" in text and "big: more expensive" in text


def test_replicas_grow_with_peak_rps_and_respect_min_replicas() -> None:
    # small: 100 rps per replica at headroom 1, 50 at headroom 2; big: 8 vCPU -> 400 rps (extrapolated).
    assert select_environment(profile(), sl(peak_rps=10, min_replicas=3), catalog()).chosen.replicas == 3
    sel = select_environment(profile(rss=800.0), sl(peak_rps=450, headroom=2.0), catalog())
    small = next(c for c in sel.candidates if c.instance.name == "small")
    big = next(c for c in sel.candidates if c.instance.name == "big")
    assert small.replicas == 9 and big.replicas == 3 and big.extrapolated and not small.extrapolated
    assert (small.workers, big.workers) == (2, 8)  # a worker per vCPU: 800 MiB x 2 twice fits in 3.5 GiB
    assert sel.chosen.instance.name == "small"  # 9 x 0.08 = 0.72 < 3 x 0.40 = 1.20
    # memory need carries the headroom too, for every worker: 800 MiB x 2 x 2 workers
    assert small.memory_need_mb == pytest.approx(3200)


def test_memory_for_fewer_workers_than_vcpus_serves_proportionally_less() -> None:
    # 1000 MiB x headroom 2 per worker: small (3.5 GiB after the OS) holds one worker of its two vCPUs.
    sel = select_environment(profile(), sl(peak_rps=450, headroom=2.0), catalog())
    small = next(c for c in sel.candidates if c.instance.name == "small")
    assert small.workers == 1 and small.capacity_rps == pytest.approx(25.0) and small.replicas == 18
    assert small.memory_need_mb == pytest.approx(2000)


def test_latency_above_slo_rejects_everything_with_a_clear_error() -> None:
    with pytest.raises(NoFeasibleEnvironment) as err:
        select_environment(profile(p95=80.0), sl(), catalog())
    msg = str(err.value)
    assert "tiny: too little memory" in msg
    assert "small: latency above SLO: predicted p95 80.00 ms > 50 ms" in msg and "big: latency above SLO" in msg


def test_history_corrects_later_selections() -> None:
    history = [Observation(model="m", instance="small", predicted_p95_ms=10, observed_p95_ms=20,
                           predicted_rss_mb=1000, observed_rss_mb=1000) for _ in range(3)]
    history.append(Observation(model="other", instance="small", predicted_p95_ms=10, observed_p95_ms=100,
                               predicted_rss_mb=1000, observed_rss_mb=5000))
    before = select_environment(profile(), sl(peak_rps=150), catalog())
    after = select_environment(profile(), sl(peak_rps=150), catalog(), history=history, model="m")
    assert before.chosen.predicted_p95_ms == pytest.approx(10)
    assert after.chosen.predicted_p95_ms == pytest.approx(20)  # 2x slower than predicted
    assert after.correction.latency == pytest.approx(2.0) and after.correction.memory == pytest.approx(1.0)
    assert (before.chosen.replicas, after.chosen.replicas) == (2, 3)  # half the throughput per replica
    assert "latency x2.00" in after.explain()
    # An SLO met before is missed once corrected: the choice switches to "nothing qualifies".
    select_environment(profile(), sl(p95_latency_ms=15), catalog())
    with pytest.raises(NoFeasibleEnvironment, match="latency above SLO: predicted p95 20.00 ms"):
        select_environment(profile(), sl(p95_latency_ms=15), catalog(), history=history, model="m")


def test_memory_correction_switches_instance() -> None:
    history = [Observation(model="m", instance="small", predicted_p95_ms=10, observed_p95_ms=10,
                           predicted_rss_mb=1000, observed_rss_mb=4000)]
    assert select_environment(profile(), sl(), catalog()).chosen.instance.name == "small"
    sel = select_environment(profile(), sl(), catalog(), history=history, model="m")
    assert sel.chosen.instance.name == "big"
    assert {c.instance.name: c.verdict for c in sel.candidates}["small"].startswith("too little memory")


def test_observations_round_trip_in_the_state_db(settings: Any) -> None:
    from autopilot.deploy.history import load_observations, record_observation

    assert load_observations(settings, "m") == []
    a = Observation(model="m", instance="c6i.large", predicted_p95_ms=5, observed_p95_ms=6,
                    predicted_rss_mb=300, observed_rss_mb=320)
    b = a.model_copy(update={"model": "n"})
    record_observation(settings, a)
    record_observation(settings, b)
    record_observation(settings, a.model_copy(update={"observed_p95_ms": 7.0}))
    loaded = load_observations(settings, "m")
    assert [o.observed_p95_ms for o in loaded] == [6.0, 7.0] and loaded[0].at == a.at


def test_real_catalog_parses_with_positive_numbers() -> None:
    cat = load_catalog(CATALOG_PATH)
    assert cat.region == "us-east-1" and cat.prices_taken and cat.source.startswith("https://")
    assert len(cat.instances) >= 5 and len({i.name for i in cat.instances}) == len(cat.instances)
    for inst in cat.instances:
        assert inst.vcpu > 0 and inst.memory_gib > 0 and inst.hourly_usd > 0 and 0 < inst.baseline_cpu_fraction <= 1
    sel = select_environment(profile(rss=400), ServiceLevelConfig(), cat)
    assert sel.chosen.replicas >= 2 and len(sel.candidates) == len(cat.instances)
