-- Kura's catalog: the source of truth for what is indexed.
-- The BM25 and vector indexes are derived from it and catch up by replaying
-- index_log (see src/index/mod.rs), so a crash at any moment leaves them
-- repairable from this file alone.

CREATE TABLE collections (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE documents (
    id            INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mtime         INTEGER NOT NULL,
    page_count    INTEGER NOT NULL DEFAULT 0,
    extractor     TEXT,
    status        TEXT NOT NULL,          -- indexed | failed
    error         TEXT,
    ingested_at   INTEGER NOT NULL,
    UNIQUE (collection_id, path)
);

-- Per-page quality: pages that were garbled or empty are recorded, not indexed.
CREATE TABLE pages (
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    quality     TEXT NOT NULL,            -- ok | empty | garbled
    reason      TEXT,
    chars       INTEGER NOT NULL,
    PRIMARY KEY (document_id, number)
);

-- AUTOINCREMENT: a chunk id is never reused, so an index never confuses an
-- old chunk with a new one of the same id.
CREATE TABLE chunks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    ordinal       INTEGER NOT NULL,
    page          INTEGER NOT NULL,
    char_start    INTEGER NOT NULL,
    char_end      INTEGER NOT NULL,
    heading       TEXT,
    text          TEXT NOT NULL,
    tokens        INTEGER NOT NULL,
    embedding     BLOB                    -- f32 little-endian, L2-normalised
);
CREATE INDEX chunks_by_document ON chunks(document_id);

-- Every change to the set of chunks, in order. Each index remembers the last
-- sequence number it applied and replays the rest when opened.
CREATE TABLE index_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    op        TEXT NOT NULL,              -- add | remove
    chunk_id  INTEGER NOT NULL
);

CREATE TABLE ingest_runs (
    id            INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    added         INTEGER NOT NULL DEFAULT 0,
    updated       INTEGER NOT NULL DEFAULT 0,
    unchanged     INTEGER NOT NULL DEFAULT 0,
    removed       INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL           -- running | done | interrupted
);
