"""Operator entry points: the ``aggregator`` command (``cli``, a module per subcommand in
``commands/``), its failures, health checks, demo data and the day's plan."""
