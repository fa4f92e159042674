"""Promotion gates: quality, explainability, fairness, infra, and the decision record."""
