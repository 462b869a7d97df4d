"""Trend tasks (see the trend engine)."""
