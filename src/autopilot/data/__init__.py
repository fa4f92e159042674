"""Data: sources, validation (Great Expectations) and content-addressed snapshots."""
