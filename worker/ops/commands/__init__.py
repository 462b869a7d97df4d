"""One module per ``aggregator`` subcommand, each with ``run(args, settings) -> exit code``.

:mod:`worker.ops.cli` parses the command line, reads the settings once and loads only the
chosen command's module, so ``aggregator --help`` and the container healthcheck do not
import Celery, librdkafka or the InfluxDB client.
"""
