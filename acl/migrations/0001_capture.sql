-- How far the change feed has recorded, per slot: the end of the last legacy
-- transaction whose facts are in the outbox. Written in the same transaction
-- as those outbox rows, so a transaction decoded twice (the slot is advanced
-- only afterwards) is recorded once.
CREATE TABLE capture_progress (
    slot            text         PRIMARY KEY,
    last_commit_lsn pg_lsn       NOT NULL,
    last_commit_at  timestamptz  NOT NULL,
    recorded_at     timestamptz  NOT NULL DEFAULT now()
);
