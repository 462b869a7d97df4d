"""One module per ``aggregator`` subcommand, each with ``run(args, settings) -> exit code``
(:mod:`worker.ops.cli` imports only the chosen one)."""
