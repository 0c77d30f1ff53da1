-- The trainer's device memory (the backend's, on rank 0: every rl_malloc plus the CUDA kernel scratch), reported
-- with each progress message: held now and the most held at once since the stage's process started.  NULL in
-- rows written before this migration, or by a pool that does not report it.
ALTER TABLE metrics ADD COLUMN mem_live_bytes INTEGER;
ALTER TABLE metrics ADD COLUMN mem_peak_bytes INTEGER;
ALTER TABLE stages ADD COLUMN mem_peak_bytes INTEGER;
