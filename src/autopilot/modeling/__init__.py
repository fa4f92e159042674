"""Modeling: splits, search space, tuning (Optuna), training, fingerprint, reproduction."""
