-- Pools that radladsd's launchers started, kept so that a restarted daemon still knows them: an idle one is
-- retired (its process group signalled, or its Slurm job cancelled) and one that died is noticed, whichever
-- --launcher the new daemon runs with.  ended_at NULL = may still be running.
CREATE TABLE launches (
  id              INTEGER PRIMARY KEY,      -- the launch id the pool registers with (--launch-id)
  job_id          INTEGER NOT NULL,
  kind            TEXT    NOT NULL CHECK (kind IN ('local','slurm')),
  pid             INTEGER,                  -- local: mpirun, leader of the pool's process group
  slurm_id        TEXT,                     -- slurm: the batch job (NULL until sbatch answered)
  ranks           INTEGER NOT NULL,
  device          TEXT    NOT NULL,
  started_at      INTEGER NOT NULL,
  ended_at        INTEGER
);
CREATE INDEX launches_live ON launches(id) WHERE ended_at IS NULL;
