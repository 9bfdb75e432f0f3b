-- Token spend per budget scope and UTC day, shared by every worker process (issue 12).
-- `scope` is `global`, `game:<id>` or `player:<id>`; `day` is days since the Unix epoch.
-- A call first reserves what it may use (`reserved`), admitted only while
-- `used + reserved` stays within the hard limit, and settles from the provider's usage
-- afterwards: `reserved` goes down by the reservation, `used` up by what was spent.
CREATE TABLE llm_spend (
    scope    TEXT NOT NULL,
    day      BIGINT NOT NULL,
    used     BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, day)
);
