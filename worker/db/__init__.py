"""PostgreSQL access shared by the store, the trend publisher and the CLI."""
