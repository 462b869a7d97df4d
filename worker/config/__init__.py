"""Settings from the environment, validated at start (``settings``), and log formatting (``logs``).
Only the entry points call ``get_settings()``; everything below is handed what it needs."""
