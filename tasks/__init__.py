"""Celery task definitions: thin I/O wrappers around the pure code in ``worker``."""
