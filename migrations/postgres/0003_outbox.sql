-- The write path's outbox: the stream events an action promised, written in the action's own
-- transaction and relayed to the event stream after COMMIT. Their stream id is `<seq>-<idx>`:
-- the log seq of the action and the event's place in it, so ids survive restarts and lost
-- Redis data, and a client's `Last-Event-ID` can be replayed from here.
CREATE TABLE stream_events (
    game_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    idx        INTEGER NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (game_id, seq, idx)
);
-- the relay's recovery after a restart and the retention sweep read by age
CREATE INDEX stream_events_created ON stream_events (created_at);

-- Every statement of an action is bounded by its game, scene, stakeholder and context, never by
-- how many ready rows other games or contexts hold: one index per kind of claimable row.
DROP INDEX planned_claim;
CREATE INDEX planned_ready_action ON planned_stakeholder_actions
    (game_id, scene_id, context_hash, stakeholder_id, priority DESC, created_at, id)
    WHERE status = 'ready' AND kind = 'action';
CREATE INDEX planned_ready_reaction ON planned_stakeholder_actions
    (game_id, scene_id, stakeholder_id, priority DESC, created_at, id)
    WHERE status = 'ready' AND kind = 'reaction';
