-- Dialogue replies live beside the game log, not in it: the log is appended to by the game's
-- writers only, so a reply finished by a worker never takes the seq a player's action was
-- applied at (which made every such action commit twice: measured, half the throughput of a
-- game whose players talk to stakeholders). `answers_seq` is the seq of the `say` it answers,
-- which orders it in the conversation. Replies logged before this change stay in the log.
CREATE TABLE dialogue_replies (
    game_id        TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    answers_seq    BIGINT NOT NULL,
    player_id      TEXT NOT NULL,
    stakeholder_id TEXT NOT NULL,
    text           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (game_id, request_id)
);
CREATE INDEX dialogue_replies_seq ON dialogue_replies (game_id, answers_seq);
