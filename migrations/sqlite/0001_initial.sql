-- hotpath schema, SQLite. Times are milliseconds since the epoch; JSON is stored as TEXT.

CREATE TABLE games (
    id            TEXT PRIMARY KEY,
    scenario_name TEXT NOT NULL,
    -- the scenario as JSON, so a game keeps the world it was started with
    scenario      TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE players (
    id         TEXT PRIMARY KEY,
    game_id    TEXT NOT NULL REFERENCES games(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    -- SHA-256 of the bearer token; the token itself is never stored
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE INDEX players_game ON players (game_id);

CREATE TABLE idempotency_records (
    player_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    game_id      TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (player_id, key)
);

CREATE TABLE game_events (
    game_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (game_id, seq)
);

CREATE TABLE planned_stakeholder_actions (
    id             TEXT PRIMARY KEY,
    game_id        TEXT NOT NULL,
    scene_id       TEXT NOT NULL,
    stakeholder_id TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('action', 'reaction')),
    payload        TEXT NOT NULL,
    priority       INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('ready', 'consumed', 'expired', 'failed')),
    expires_at     INTEGER NOT NULL,
    dedupe_key     TEXT NOT NULL UNIQUE,
    reacts_to      INTEGER,
    context_hash   TEXT NOT NULL,
    world_version  INTEGER NOT NULL,
    produced_at    INTEGER NOT NULL,
    model          TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    claimed_at     INTEGER
);
-- serves the claim: only ready rows, in the claim's order
CREATE INDEX planned_claim ON planned_stakeholder_actions
    (game_id, scene_id, stakeholder_id, priority DESC, created_at, id) WHERE status = 'ready';
-- serves the sweep
CREATE INDEX planned_expiry ON planned_stakeholder_actions (status, expires_at);

CREATE TABLE canon_events (
    id             TEXT PRIMARY KEY,
    game_id        TEXT NOT NULL,
    conflict_id    TEXT NOT NULL,
    title          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    dedupe_key     TEXT NOT NULL UNIQUE,
    context_hash   TEXT NOT NULL,
    world_version  INTEGER NOT NULL,
    produced_at    INTEGER NOT NULL,
    model          TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX canon_game ON canon_events (game_id, created_at);
