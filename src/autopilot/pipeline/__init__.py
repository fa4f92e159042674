"""The task layer: one function per DAG task, grouped by part of the lifecycle."""
