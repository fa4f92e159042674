"""Deployment sizing: profile a model on promotion and pick the environment that serves it."""
