// Documents: the collections with their counts, the documents of one collection
// (status, pages, problem pages, failure reasons), adding files and folders by
// their path on the server with live per-file progress, re-index and delete.
import { useCallback, useEffect, useState } from "react";
import { api, fileName, formatBytes, type CollectionInfo, type DocumentInfo } from "./api";
import { useI18n, type Key } from "./i18n";
import { Icon } from "./Icon";
import { desktop } from "./desktop";

interface FileState {
  path: string;
  outcome: string; // pending | processing | added | updated | unchanged | failed
  pages: number;
  reason?: string;
}

interface Job {
  id: string;
  collection: string;
  files: FileState[];
  state: "running" | "done" | "error";
  summary?: Record<string, unknown> & {
    added: number;
    updated: number;
    unchanged: number;
    removed: number;
    failed: { path: string; reason: string }[];
    pages: number;
    chunks: number;
    seconds: number;
  };
  error?: string;
}

function StatusBadge({ s }: { s: string }) {
  const { t } = useI18n();
  const key = `st_${s}` as Key;
  const cls =
    s === "failed" ? "bad" : s === "pending" ? "idle" : s === "processing" ? "busy" : s === "unchanged" ? "idle" : "ok";
  return (
    <span className={`badge ${cls}`} data-testid="file-status" data-status={s}>
      {s === "processing" && <span className="spinner small" />}
      {t(key)}
    </span>
  );
}

function JobView({ job }: { job: Job }) {
  const { t } = useI18n();
  const done = job.files.filter((f) => f.outcome !== "pending" && f.outcome !== "processing").length;
  const total = job.files.length;
  const pct = total ? Math.round((100 * done) / total) : job.state === "done" ? 100 : 0;
  const s = job.summary;
  return (
    <div className="card job" data-testid="ingest-job" data-state={job.state}>
      <div className="job-head">
        <strong>
          {job.state === "running" ? t("ingesting") : job.state === "done" ? t("ingestDone") : t("ingestFailed")}
        </strong>
        <span className="muted">
          {t("collection")}: {job.collection}
        </span>
        <span className="spacer" />
        <span className="muted">{t("filesProgress", { done, total })}</span>
      </div>
      <div className="progress" aria-valuenow={pct} role="progressbar">
        <div className={`progress-bar ${job.state}`} style={{ width: `${pct}%` }} />
      </div>
      {s && (
        <div className="job-summary" data-testid="ingest-summary">
          {t("summaryLine", {
            added: s.added,
            updated: s.updated,
            unchanged: s.unchanged,
            removed: s.removed,
            failed: s.failed.length,
            pages: s.pages,
            chunks: s.chunks,
            seconds: s.seconds.toFixed(1),
          })}
        </div>
      )}
      {job.error && <div className="error-box">{job.error}</div>}
      <table className="table compact">
        <tbody>
          {job.files.map((f) => (
            <tr key={f.path} data-testid="job-file">
              <td className="file-cell" title={f.path}>
                {fileName(f.path)}
              </td>
              <td>
                <StatusBadge s={f.outcome} />
              </td>
              <td className="num">{f.pages > 0 ? `${f.pages} ${t("pagesUnit")}` : ""}</td>
              <td className="reason">{f.reason}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Follows an ingest job's event stream (replayed from its start by the server). */
function follow(id: string, collection: string, update: (j: Job) => void): () => void {
  let job: Job = { id, collection, files: [], state: "running" };
  const push = () => {
    // The walk is sorted and files are processed in order: the first pending one is in work.
    const files = job.files.map((f) => ({ ...f }));
    if (job.state === "running") {
      const next = files.find((f) => f.outcome === "pending");
      if (next) next.outcome = "processing";
    }
    update({ ...job, files });
  };
  const es = new EventSource(`/api/ingest/${encodeURIComponent(id)}/events`);
  es.addEventListener("start", (e) => {
    const d = JSON.parse((e as MessageEvent).data) as { collection: string; files: string[] };
    job = { ...job, collection: d.collection, files: d.files.map((p) => ({ path: p, outcome: "pending", pages: 0 })) };
    push();
  });
  es.addEventListener("file", (e) => {
    const d = JSON.parse((e as MessageEvent).data) as FileState;
    const files = job.files.some((f) => f.path === d.path)
      ? job.files.map((f) => (f.path === d.path ? { ...f, ...d } : f))
      : [...job.files, d];
    job = { ...job, files };
    push();
  });
  es.addEventListener("done", (e) => {
    const d = JSON.parse((e as MessageEvent).data) as { summary: NonNullable<Job["summary"]> };
    const reasons = new Map(d.summary.failed.map((f) => [f.path, f.reason]));
    const files = job.files.map((f) =>
      reasons.has(f.path)
        ? { ...f, outcome: "failed", reason: reasons.get(f.path) }
        : f.outcome === "pending"
          ? { ...f, outcome: "unchanged" }
          : f,
    );
    for (const [path, reason] of reasons)
      if (!files.some((f) => f.path === path)) files.push({ path, outcome: "failed", pages: 0, reason });
    job = { ...job, files, state: "done", summary: d.summary };
    es.close();
    push();
  });
  es.addEventListener("error", (e) => {
    const data = (e as MessageEvent).data;
    if (typeof data === "string") {
      const d = JSON.parse(data) as { error: { message: string } };
      job = { ...job, state: "error", error: d.error.message };
      es.close();
      push();
    }
    // Otherwise a dropped connection: EventSource reconnects and the server replays.
  });
  return () => es.close();
}

export function Documents() {
  const { t } = useI18n();
  const [collections, setCollections] = useState<CollectionInfo[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [docs, setDocs] = useState<DocumentInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showAdd, setShowAdd] = useState(false);
  const [newCollection, setNewCollection] = useState("");
  const [paths, setPaths] = useState("");
  const [jobs, setJobs] = useState<Job[]>([]);

  const refresh = useCallback(async () => {
    try {
      const r = await api.collections();
      setCollections(r.collections);
      setSelected((s) => s ?? r.collections[0]?.name ?? null);
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);

  const loadDocs = useCallback(async (name: string) => {
    try {
      setDocs((await api.documents(name)).documents);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);

  useEffect(() => {
    refresh();
    // Jobs still running (started before a reload, or from another browser).
    api
      .jobs()
      .then((r) => {
        for (const j of r.jobs) if (j.state === "running" || j.state === "queued") track(j.id, j.collection);
      })
      .catch(() => {});
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [refresh]);
  useEffect(() => {
    if (selected) loadDocs(selected);
    else setDocs(null);
  }, [selected, loadDocs]);

  const track = (id: string, collection: string) => {
    setJobs((js) => [{ id, collection, files: [], state: "running" }, ...js.filter((j) => j.id !== id)]);
    follow(id, collection, (j) => {
      setJobs((js) => js.map((x) => (x.id === j.id ? j : x)));
      if (j.state !== "running") {
        refresh();
        setSelected(collection);
        loadDocs(collection);
      }
    });
  };

  async function startIngest() {
    const list = paths
      .split("\n")
      .map((p) => p.trim())
      .filter(Boolean);
    const coll = newCollection.trim();
    if (!coll || list.length === 0) return;
    try {
      const r = await api.startIngest(coll, list);
      track(r.id, coll);
      setPaths("");
      setShowAdd(false);
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function reindex(name: string) {
    try {
      const r = await api.reindex(name);
      track(r.id, name);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function remove(d: DocumentInfo) {
    if (!confirm(`${t("confirmDelete")}\n\n${d.path}`)) return;
    try {
      await api.deleteDocument(d.id);
      if (selected) await loadDocs(selected);
      await refresh();
    } catch (e) {
      setError((e as Error).message);
    }
  }

  return (
    <div className="page" data-testid="documents-screen">
      <header className="page-head">
        <h1>{t("docsTitle")}</h1>
        <span className="spacer" />
        <button
          className="btn primary"
          onClick={() => {
            setShowAdd((v) => !v);
            setNewCollection((c) => c || selected || "");
          }}
          data-testid="add-documents"
        >
          ＋ {t("addDocuments")}
        </button>
      </header>

      {error && (
        <div className="error-box" role="alert">
          {t("errorPrefix")}: {error}
        </div>
      )}

      {showAdd && (
        <div className="card add-form">
          <p className="muted">{t("addHelp")}</p>
          <label>
            {t("collectionName")}
            <input
              list="collection-names"
              value={newCollection}
              onChange={(e) => setNewCollection(e.target.value)}
              data-testid="ingest-collection"
            />
            <datalist id="collection-names">
              {collections.map((c) => (
                <option key={c.name} value={c.name} />
              ))}
            </datalist>
          </label>
          <label>
            {t("paths")}
            <textarea
              rows={3}
              value={paths}
              onChange={(e) => setPaths(e.target.value)}
              placeholder={"/srv/manuals/就業規則.pdf\n/srv/manuals/"}
              data-testid="ingest-paths"
            />
          </label>
          <div className="add-actions">
            {desktop.available() && (
              <button
                className="btn"
                onClick={async () => {
                  try {
                    const dir = await desktop.pickFolder();
                    if (dir) setPaths((p) => (p.trim() ? `${p.trim()}\n${dir}` : dir));
                  } catch (e) {
                    setError(String(e));
                  }
                }}
                data-testid="choose-folder"
              >
                <Icon name="folder" size={14} /> {t("chooseFolder")}
              </button>
            )}
            <button
              className="btn primary"
              onClick={startIngest}
              disabled={!newCollection.trim() || !paths.trim()}
              data-testid="start-ingest"
            >
              {t("startIngest")}
            </button>
          </div>
        </div>
      )}

      {jobs.map((j) => (
        <JobView key={j.id} job={j} />
      ))}

      <div className="collections-grid">
        {collections.map((c) => (
          <button
            key={c.name}
            className={`card collection-card ${selected === c.name ? "selected" : ""}`}
            onClick={() => setSelected(c.name)}
            data-testid={`collection-${c.name}`}
          >
            <div className="collection-name">
              <Icon name="folder" size={17} /> {c.name}
            </div>
            <div className="stats">
              <span>
                <b>{c.documents}</b> {t("documents")}
              </span>
              <span>
                <b>{c.chunks}</b> {t("chunks")}
              </span>
              {c.failed > 0 && (
                <span className="bad-text">
                  <b>{c.failed}</b> {t("failed")}
                </span>
              )}
              {c.problem_pages > 0 && (
                <span className="warn-text">
                  <b>{c.problem_pages}</b> {t("problemPages")}
                </span>
              )}
            </div>
          </button>
        ))}
      </div>

      {selected && (
        <div className="card">
          <div className="card-head">
            <h2>
              {t("collection")}: {selected}
            </h2>
            <span className="spacer" />
            <button className="btn" onClick={() => reindex(selected)} title={t("reindexHelp")} data-testid="reindex">
              <Icon name="refresh" size={14} /> {t("reindex")}
            </button>
          </div>
          {docs && docs.length === 0 && <p className="muted">{t("noDocuments")}</p>}
          {docs && docs.length > 0 && (
            <table className="table" data-testid="documents-table">
              <thead>
                <tr>
                  <th>{t("path")}</th>
                  <th>{t("status")}</th>
                  <th className="num">{t("pages")}</th>
                  <th className="num">{t("size")}</th>
                  <th>{t("problemPages")} / {t("reason")}</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {docs.map((d) => (
                  <tr key={d.id} data-testid="document-row">
                    <td className="file-cell" title={d.path}>
                      <div className="file-name">{fileName(d.path)}</div>
                      <div className="file-path">{d.path}</div>
                    </td>
                    <td>
                      <StatusBadge s={d.status} />
                    </td>
                    <td className="num">{d.pages}</td>
                    <td className="num">{formatBytes(d.size)}</td>
                    <td className="reason">
                      {d.error && <div className="bad-text">{d.error}</div>}
                      {d.problem_pages.map((p) => (
                        <div key={p.page} className="warn-text">
                          {t("page")}
                          {p.page}: {t(`q_${p.quality}` as Key)}
                          {p.reason ? ` — ${p.reason}` : ""}
                        </div>
                      ))}
                    </td>
                    <td>
                      <button className="btn small ghost danger" onClick={() => remove(d)} data-testid="delete-document">
                        <Icon name="trash" size={13} /> {t("delete")}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </div>
  );
}
