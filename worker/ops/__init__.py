"""Operator entry points: the ``aggregator`` command (``cli``, one module per subcommand in
``commands/``), how failures end a command (``failures``), health checks (``health``), demo
data (``demo``) and the day's plan (``dayplan/``). The local stack of ``aggregator dev`` is
development machinery and lives with the tests (``tests/support/devstack/``)."""
