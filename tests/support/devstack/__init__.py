"""The local stack of `aggregator dev` and of the tests: Tansu, Redis and PostgreSQL from this
machine's binaries, and a supervisor for the product's processes. Development machinery, so it
lives here and not in the product: the image carries nothing that starts a broker or a database."""
