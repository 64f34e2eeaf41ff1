-- Who ran each job (issue 18). A completed job used to forget its worker
-- (locked_by is cleared when the lease ends), so nobody could audit a double
-- run or a slow worker.
--
-- Each claim of a job opens one job_attempts row, in the transaction that
-- claims the job; the transaction that finishes the attempt (completes,
-- fails, retries or hands back the job) closes it, fenced by the lease token
-- like every other worker write. A claim that takes over a job whose lease
-- ran out closes the dead attempt as 'abandoned' in the same transaction. So
-- the history always agrees with the job row, whatever crashes.
--
-- Worker ids, hosts, pids and lease tokens are for operators (and the
-- metrics of issue 14): GraphQL shows a job's owner the numbers, times,
-- outcomes and errors only.

-- The worker of the job's latest attempt, kept when its lease is cleared:
-- for a finished job, the worker that finished it.
ALTER TABLE jobs ADD COLUMN worker_id text;

CREATE TABLE job_attempts (
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- 1, 2, ... per job in claim order. Not jobs.attempts, which a stopping
    -- worker's hand-back and a draft's re-queue lower again.
    number      integer NOT NULL CHECK (number > 0),
    -- The claim's lease token (jobs.locked_by while the attempt runs).
    lease_token text NOT NULL UNIQUE,
    -- host:pid:suffix, made once per worker (pipeline/worker.py).
    worker_id   text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text NOT NULL DEFAULT 'running',
    -- A failed attempt's: whether another attempt could succeed.
    retryable   boolean,
    -- Why it did not complete, in words its job's owner may read.
    error       text,
    PRIMARY KEY (job_id, number),
    CONSTRAINT job_attempts_outcome_check
        CHECK (outcome IN ('running', 'completed', 'failed', 'canceled', 'lease_lost', 'abandoned', 'released')),
    CONSTRAINT job_attempts_finished_check CHECK ((outcome = 'running') = (finished_at IS NULL)),
    CONSTRAINT job_attempts_retryable_check CHECK ((outcome = 'failed') = (retryable IS NOT NULL))
);

-- A job runs on one worker at a time: at most one open attempt.
CREATE UNIQUE INDEX job_attempts_one_running_idx ON job_attempts (job_id) WHERE outcome = 'running';

-- Operators' questions: what a worker ran, and what ran lately.
CREATE INDEX job_attempts_worker_idx ON job_attempts (worker_id, started_at);
CREATE INDEX job_attempts_started_idx ON job_attempts (started_at);
