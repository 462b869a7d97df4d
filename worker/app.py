"""Shim: ``celery -A worker.app`` (compose, the Dockerfile, operators' scripts) names this module.

The application lives in :mod:`worker.celeryapp.app`; this name is kept so every deployed
command line goes on working. Nothing else belongs here.
"""

from worker.celeryapp.app import app

__all__ = ["app"]
