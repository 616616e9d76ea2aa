-- The durable queue of LoRA training jobs (src/jobs/). The job itself — its
-- folder with job.toml, frozen data, metrics and checkpoints — lives on disk
-- (src/train/trainer.rs); this table says what is waiting, running or done,
-- and holds the latest progress so that `kura jobs list` needs no file access.
CREATE TABLE training_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    folder           TEXT NOT NULL,
    state            TEXT NOT NULL,      -- queued | running | done | failed | cancelled
    run_at           INTEGER NOT NULL,   -- earliest start, unix seconds
    submitted_at     INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    runner_pid       INTEGER,
    heartbeat_at     INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    step             INTEGER NOT NULL DEFAULT 0,
    total_steps      INTEGER,
    loss             REAL,
    lr               REAL,
    tokens_per_s     REAL,
    eta_s            REAL,
    eval_loss        REAL,
    error            TEXT
);

CREATE INDEX training_jobs_due ON training_jobs (state, run_at);
