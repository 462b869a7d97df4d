"""`aggregator selftest`: the deployment's event store probed through the product's own code
paths and every answer compared with the pure reference, leaving nothing behind (:mod:`.run`).
"""
