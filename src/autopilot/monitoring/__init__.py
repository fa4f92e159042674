"""Monitoring: drift, performance and attribution checks on windows of served traffic."""
