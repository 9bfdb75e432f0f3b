-- Prepare ahead (issue 9): reactions are written for a scene's context and the kind of action
-- they answer, and claimed only by an action of that kind in that context. Their
-- `context_hash` is now `<context>/<action kind>` (`model::reaction_key`), so one partial
-- index serves every claim; rows made under the old scheme can never match and are expired.
DROP INDEX planned_ready_action;
DROP INDEX planned_ready_reaction;
UPDATE planned_stakeholder_actions SET status = 'expired' WHERE status = 'ready';
CREATE INDEX planned_ready ON planned_stakeholder_actions
    (game_id, scene_id, context_hash, stakeholder_id, priority DESC, created_at, id)
    WHERE status = 'ready';

-- Coalescing guards: one row per job queued or running, by what it produces
-- (`Job::coalesce_key`). Taken in the dispatching action's transaction, deleted by the worker
-- when the job ends (written, skipped or dead); `expires_at` bounds a guard whose job was lost.
CREATE TABLE job_guards (
    game_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (game_id, key)
);

-- One row per model call: what was asked, what it cost, whether its result was written.
-- Read by `GET /v1/admin/slow-path` and the play simulator.
CREATE TABLE llm_calls (
    id                INTEGER PRIMARY KEY,
    game_id           TEXT,
    kind              TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    -- the provider reported no usage: the counts are estimated from the text
    estimated         INTEGER NOT NULL,
    ok                INTEGER NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX llm_calls_created ON llm_calls (created_at);

-- Idempotency records are kept for a day (`store::IDEMPOTENCY_RETAIN_SECS`); the cleanup
-- deletes older ones by age.
CREATE INDEX idempotency_created ON idempotency_records (created_at);
