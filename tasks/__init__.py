"""Celery task definitions: thin wrappers that take their resources from the process's
composition root (:mod:`worker.celeryapp.resources`) and call the domain code in ``worker``.
Each task's name is :mod:`worker.core.names`'s."""
