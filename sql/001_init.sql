-- 001: the job store.  Times are milliseconds since the Unix epoch (UTC).
-- States are checked here as well as in the daemon: the database refuses what the code must never do.

CREATE TABLE jobs (
  id              INTEGER PRIMARY KEY,
  name            TEXT    NOT NULL,
  owner_uid       INTEGER NOT NULL,
  owner           TEXT    NOT NULL,
  state           TEXT    NOT NULL CHECK (state IN ('QUEUED','HELD','RUNNING','RECOVERING','COMPLETED',
                                                    'FAILED','CANCELLING','CANCELLED','INTERRUPTED')),
  priority        INTEGER NOT NULL DEFAULT 0,
  spec_json       TEXT    NOT NULL,
  output_dir      TEXT    NOT NULL,
  pool_name       TEXT    NOT NULL DEFAULT '',
  ranks           INTEGER NOT NULL DEFAULT 1,
  device          TEXT    NOT NULL DEFAULT 'cpu',
  max_restarts    INTEGER NOT NULL DEFAULT 3,
  restarts        INTEGER NOT NULL DEFAULT 0,
  stages_total    INTEGER NOT NULL,
  stages_done     INTEGER NOT NULL DEFAULT 0,
  tokens_total    INTEGER NOT NULL DEFAULT 0,   -- sum over stages; progress is token-weighted
  tokens_done     INTEGER NOT NULL DEFAULT 0,
  current_stage   INTEGER NOT NULL DEFAULT 0,   -- index of the running or next stage
  failure_reason  TEXT,
  result_path     TEXT,
  restart_of      INTEGER REFERENCES jobs(id),
  submitted_at    INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  finished_at     INTEGER
);
CREATE INDEX jobs_by_state ON jobs(state, priority DESC, id);
CREATE INDEX jobs_by_owner ON jobs(owner_uid, id);

-- Terminal states never change.
CREATE TRIGGER jobs_terminal_is_final BEFORE UPDATE OF state ON jobs
  WHEN OLD.state IN ('COMPLETED','FAILED','CANCELLED') AND NEW.state <> OLD.state
BEGIN
  SELECT RAISE(ABORT, 'job is in a terminal state');
END;

CREATE TABLE stages (
  job_id          INTEGER NOT NULL REFERENCES jobs(id),
  idx             INTEGER NOT NULL,
  kind            TEXT    NOT NULL CHECK (kind IN ('pretrain','transfer','align','distill','extend','export')),
  state           TEXT    NOT NULL CHECK (state IN ('PENDING','RUNNING','DONE','FAILED','CANCELLED')),
  options_json    TEXT    NOT NULL,
  tokens_total    INTEGER NOT NULL DEFAULT 0,
  tokens_done     INTEGER NOT NULL DEFAULT 0,
  step            INTEGER NOT NULL DEFAULT 0,
  last_loss       REAL,
  tokens_per_s    REAL,
  output_dir      TEXT    NOT NULL,
  started_at      INTEGER,
  finished_at     INTEGER,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;

CREATE TABLE pools (
  id              INTEGER PRIMARY KEY,
  name            TEXT    NOT NULL DEFAULT '',
  ranks           INTEGER NOT NULL,
  device          TEXT    NOT NULL,
  host            TEXT    NOT NULL DEFAULT '',
  state           TEXT    NOT NULL CHECK (state IN ('STARTING','IDLE','BUSY','LOST','GONE')),
  launcher        TEXT    NOT NULL DEFAULT 'external',   -- external | local | slurm
  launcher_pid    INTEGER,
  slurm_job_id    TEXT,
  registered_at   INTEGER NOT NULL,
  last_seen_at    INTEGER NOT NULL
);

CREATE TABLE workers (
  pool_id         INTEGER NOT NULL REFERENCES pools(id),
  rank            INTEGER NOT NULL,
  pid             INTEGER NOT NULL,
  host            TEXT    NOT NULL DEFAULT '',
  PRIMARY KEY (pool_id, rank)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
  id              INTEGER PRIMARY KEY,
  job_id          INTEGER NOT NULL REFERENCES jobs(id),
  stage_idx       INTEGER NOT NULL,
  attempt_id      INTEGER,
  step            INTEGER NOT NULL,
  tokens          INTEGER NOT NULL,
  path            TEXT    NOT NULL,
  sha256          TEXT    NOT NULL,
  created_at      INTEGER NOT NULL,
  deleted_at      INTEGER,
  FOREIGN KEY (job_id, stage_idx) REFERENCES stages(job_id, idx)
);
CREATE INDEX checkpoints_by_stage ON checkpoints(job_id, stage_idx, step);

CREATE TABLE attempts (
  id              INTEGER PRIMARY KEY,
  job_id          INTEGER NOT NULL REFERENCES jobs(id),
  stage_idx       INTEGER NOT NULL,
  number          INTEGER NOT NULL,
  state           TEXT    NOT NULL CHECK (state IN ('RUNNING','SUCCEEDED','FAILED','CANCELLED','LOST')),
  pool_id         INTEGER REFERENCES pools(id),
  resumed_from    INTEGER REFERENCES checkpoints(id),
  started_at      INTEGER NOT NULL,
  finished_at     INTEGER,
  last_progress_at INTEGER,
  failure_reason  TEXT,
  FOREIGN KEY (job_id, stage_idx) REFERENCES stages(job_id, idx),
  UNIQUE (job_id, stage_idx, number)
);
CREATE INDEX attempts_running ON attempts(state) WHERE state = 'RUNNING';

-- Append-only history: the id is the SSE event id, so it must never be reused (AUTOINCREMENT).
CREATE TABLE events (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  time            INTEGER NOT NULL,
  job_id          INTEGER REFERENCES jobs(id),
  kind            TEXT    NOT NULL CHECK (kind IN ('job','stage','attempt','pool','checkpoint','daemon')),
  stage_idx       INTEGER,
  from_state      TEXT,
  to_state        TEXT,
  reason          TEXT
);
CREATE INDEX events_by_job ON events(job_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
  SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
  SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE metrics (
  id              INTEGER PRIMARY KEY,
  job_id          INTEGER NOT NULL REFERENCES jobs(id),
  stage_idx       INTEGER NOT NULL,
  attempt_id      INTEGER NOT NULL REFERENCES attempts(id),
  time            INTEGER NOT NULL,
  step            INTEGER NOT NULL,
  tokens          INTEGER NOT NULL,
  loss            REAL,
  lr              REAL,
  tokens_per_s    REAL,
  grad_norm       REAL
);
CREATE INDEX metrics_by_stage ON metrics(job_id, stage_idx, step);

CREATE TABLE logs (
  id              INTEGER PRIMARY KEY,
  job_id          INTEGER NOT NULL REFERENCES jobs(id),
  attempt_id      INTEGER REFERENCES attempts(id),
  time            INTEGER NOT NULL,
  rank            INTEGER NOT NULL DEFAULT 0,
  level           TEXT    NOT NULL DEFAULT 'info',
  text            TEXT    NOT NULL
);
CREATE INDEX logs_by_job ON logs(job_id, id);
