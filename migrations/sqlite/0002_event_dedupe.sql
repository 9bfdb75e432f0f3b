-- Events a job may append more than once (a streamed dialogue reply) carry a dedupe key; the
-- unique index makes the second append a no-op instead of a second entry.
ALTER TABLE game_events ADD COLUMN dedupe_key TEXT;
CREATE UNIQUE INDEX game_events_dedupe ON game_events (game_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
