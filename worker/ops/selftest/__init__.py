"""`aggregator selftest`: probe the deployment's event store through the product's own code
paths and compare every answer with the pure reference, leaving nothing behind.

* :mod:`~worker.ops.selftest.probe` the probe events and the answers they call for (pure);
* :mod:`~worker.ops.selftest.compare` the checks and their lines (pure);
* :mod:`~worker.ops.selftest.layout` InfluxDB's buckets and tasks against setup's (pure);
* :mod:`~worker.ops.selftest.postgres`, :mod:`~worker.ops.selftest.influx` where the probe
  goes in each store, and its removal;
* :mod:`~worker.ops.selftest.run` the self-test itself. The command is
  ``worker/ops/commands/selftest.py``; ``aggregator setup`` runs it at its end.
"""
