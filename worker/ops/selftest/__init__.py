"""`aggregator selftest`: the event store probed through the product's own code paths and
compared with the pure reference, leaving nothing behind (:mod:`.run`)."""
