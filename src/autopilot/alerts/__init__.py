"""Alerts: the messages, their ledger (the outbox) and their delivery."""
