-- depends: 0005.partition-events-and-history
-- trend_run keeps every run for TREND_HISTORY_RETENTION_DAYS (400): about 660 rows a day
-- come and, once the deployment is that old, as many go (the maintenance task's "prune
-- trend_run"). Space of deleted rows is reused only after a vacuum, and autovacuum's default
-- threshold (20% of the table dead, some 53,000 rows) is reached only every ~80 days, so
-- the table kept growing through the soak's steady state (README "Soak"). At 1% it is
-- vacuumed every ~4 days and stays flat. Idempotent: setting a storage parameter again is
-- a no-op.
ALTER TABLE trend_run SET (autovacuum_vacuum_scale_factor = 0.01);
