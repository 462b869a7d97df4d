"""Celery wiring: the app (``app``), beat's entries (``beat``), the kombu guard, and the
per-process resources built from settings (``resources``). Task definitions live in the
top-level ``tasks`` package, the Celery configuration in ``celeryconfig.py``."""
