"""Settings from the environment, validated at start (``settings``), and log formatting (``logs``).

The settings own the durations table a process uses (``Settings.durations()``). Only the
entry points (the ``aggregator`` command, the Celery app and its resources) read them with
``get_settings()``; everything below is handed a ``Settings`` or the values it needs.
"""
