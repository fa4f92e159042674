"""The training DAG's graph reads at a glance: task groups, the lifecycle's order as its only edges,
display names on every task of both DAGs, and a one-line description of each DAG."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import PROJECT

TRAINING = "autopilot_training__adult_income"
MONITORING = "autopilot_monitoring__adult_income"

# validate -> snapshot -> plan_tuning -> tune_worker -> tune -> train_and_register -> {three gates} -> decide
# -> review -> shadow -> promote -> plan_deployment -> deploy -> rollout: each task's upstream set, and nothing else.
UPSTREAM = {
    "validate": set(), "snapshot": {"validate"}, "plan_tuning": {"snapshot"}, "tune_worker": {"plan_tuning"},
    "tune": {"tune_worker"}, "train_and_register": {"tune"}, "quality": {"train_and_register"},
    "explainability_and_fairness": {"train_and_register"}, "infra": {"train_and_register"},
    "decide": {"quality", "explainability_and_fairness", "infra"}, "review": {"decide"}, "shadow": {"review"},
    "promote": {"shadow"},
    "plan_deployment": {"promote"}, "deploy": {"plan_deployment"}, "rollout": {"deploy"},
}
GROUPS = {
    "data": {"validate", "snapshot"},
    "tuning": {"plan_tuning", "tune_worker", "tune", "train_and_register"},
    "gates": {"quality", "explainability_and_fairness", "infra", "decide", "review", "shadow", "promote"},
    "deployment": {"plan_deployment", "deploy", "rollout"},
}


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert bag.import_errors == {}
    return dict(bag.dags)


def test_edges_are_the_lifecycle_order_and_nothing_else(dags: dict[str, Any]) -> None:
    tasks = {t.task_id: t for t in dags[TRAINING].tasks}
    assert {name: set(task.upstream_task_ids) for name, task in tasks.items()} == UPSTREAM
    downstream = {name: set(task.downstream_task_ids) for name, task in tasks.items()}
    assert downstream == {name: {other for other, ups in UPSTREAM.items() if name in ups} for name in UPSTREAM}
    assert len(tasks["snapshot"].downstream_task_ids) == 1  # it fed nine tasks when every input drew an edge


def test_every_task_is_in_its_group_with_its_own_id(dags: dict[str, Any]) -> None:
    dag = dags[TRAINING]
    found = {name: {t.task_id for t in dag.tasks if t.task_group.group_id == name} for name in GROUPS}
    assert found == GROUPS
    groups = dag.task_group.children
    assert list(groups) == ["data", "tuning", "gates", "deployment"]  # the lifecycle's order
    for name, group in groups.items():
        assert group.prefix_group_id is False and group.tooltip, name  # task ids stay unprefixed
    assert {t.task_id for t in dag.tasks} == set(UPSTREAM)


def test_every_task_has_a_display_name_and_each_dag_a_one_line_description(dags: dict[str, Any]) -> None:
    training = {t.task_id: t.task_display_name for t in dags[TRAINING].tasks}
    assert training["validate"] == "Validate data (Great Expectations)" and training["tune"] == "Pick best trial"
    assert training["review"] == "Human review" and training["promote"] == "Promote to champion"
    assert training["shadow"] == "Shadow on live traffic"
    monitoring = {t.task_id: t.task_display_name for t in dags[MONITORING].tasks}
    assert monitoring["monitor"] == "Check window for drift" and monitoring["drain_alerts"] == "Re-send failed alerts"
    for dag_id in (TRAINING, MONITORING):
        names = [t.task_display_name for t in dags[dag_id].tasks]
        assert all(name and name[0].isupper() for name in names), names  # a label, not the task id
        assert len(set(names)) == len(names)
        description = dags[dag_id].description
        assert description and "\n" not in description and "adult_income" in description and len(description) < 120
    tasks = {t.task_id: t for t in dags[TRAINING].tasks}
    # the mapped workers keep their "worker k of n" label
    assert tasks["tune_worker"].map_index_template == "{{ autopilot_map_label }}"


def test_the_declaration_names_a_known_group_and_only_earlier_tasks() -> None:
    from autopilot.pipeline.lifecycle import GROUPS as DECLARED
    from autopilot.pipeline.lifecycle import TRAINING as STAGES

    seen: set[Any] = set()
    for stage in STAGES:
        assert stage.group in DECLARED and stage.label, stage.task
        assert set(stage.upstream) <= seen and set(stage.inputs) <= seen, stage.task
        if stage.mapped:  # it expands over its first input: that one must be an edge (an XComArg)
            assert stage.inputs[0] in stage.upstream
        seen.add(stage.task)
