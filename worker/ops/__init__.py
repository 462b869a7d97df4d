"""Operator entry points: the ``aggregator`` command (``cli``, one module per subcommand in
``commands/``), how failures end a command (``failures``), health checks (``health``), demo
data (``demo``), the day's plan (``dayplan/``) and the local dev stack (``devstack/``)."""
