"""The task layer: one function per DAG task, grouped by part of the lifecycle.

`data`, `training`, `gates`, `deploy` and `monitoring` hold the stage functions; `lifecycle`
declares the training pipeline they form (task ids, inputs, how each task runs), and `context`
what its tasks hand each other (`RunContext` and the typed references).
"""
