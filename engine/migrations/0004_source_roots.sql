-- Folders the administrator ingested at the shell (`kura ingest PATH`), per
-- collection. A server shows the pages of a collection's documents only when they
-- lie inside one of these or inside the server's own `--source-root` folders, so a
-- file read by any other way can never be shown back through the API.

CREATE TABLE source_roots (
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,        -- symlinks resolved
    added_at      INTEGER NOT NULL,
    PRIMARY KEY (collection_id, path)
);
