-- A slot being (re)created: set before the slot is created, cleared in the
-- transaction that announces `legacy.feed.restarted`, so a crash between
-- the two is finished at the next start instead of never announced.
ALTER TABLE capture_progress ADD COLUMN restart_pending boolean NOT NULL DEFAULT false;
-- No commit announced yet: a first start has nothing to give as `since`.
ALTER TABLE capture_progress ALTER COLUMN last_commit_at DROP NOT NULL;
