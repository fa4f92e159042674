"""Registered versions: promotion (alias moves), rollback, retention, comparison, lineage."""
