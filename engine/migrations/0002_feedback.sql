-- 👍/👎 feedback on answers from the web UI: what was asked, what Kura answered
-- and which passages it cited, so IT staff can review bad answers and turn good
-- ones into training pairs (issue 6).

CREATE TABLE feedback (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    rating      TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    question    TEXT NOT NULL,
    answer      TEXT NOT NULL,
    collections TEXT NOT NULL DEFAULT '[]',   -- JSON array of collection names
    citations   TEXT NOT NULL DEFAULT '[]',   -- JSON array as the answer cited them
    comment     TEXT
);

CREATE INDEX feedback_created ON feedback (created_at);
