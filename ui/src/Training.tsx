// Training (IT staff): the LoRA job queue with live progress (state, step, loss,
// tokens/s, time left), the loss curve of the selected job, cancel / resume, and a
// form to submit a job.toml with a start time. Polls the server every few seconds;
// the training itself runs in a runner: inside the server (`--run-jobs`, the desktop
// app) or `kura jobs run` (see src/server/jobs_api.rs).
import { useCallback, useEffect, useState } from "react";
import {
  api,
  fileName,
  type AdapterInfo,
  type CollectionInfo,
  type DatasetSummary,
  type DraftPair,
  type StepMetrics,
  type TrainingJob,
} from "./api";
import { useI18n, type Key } from "./i18n";

const POLL_MS = 3000;

const TEMPLATE = `name = "faq-tuning"
model = "qwen2.5-coder-0.5b-instruct"
dataset = "faq"          # an imported dataset (kura dataset import) or a JSONL path

[train]
max_steps = 100
`;

function duration(s: number | null): string {
  if (s === null || !isFinite(s)) return "";
  const m = Math.round(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : m > 0 ? `${m}m` : `${Math.round(s)}s`;
}

/** The loss (and eval loss) per step as a small SVG chart. */
function LossCurve({ metrics }: { metrics: StepMetrics[] }) {
  const { t } = useI18n();
  if (metrics.length === 0) return <p className="muted">{t("noMetrics")}</p>;
  const W = 640;
  const H = 200;
  const pad = 32;
  const steps = metrics.map((m) => m.step);
  const losses = metrics.flatMap((m) => (m.eval_loss === undefined ? [m.loss] : [m.loss, m.eval_loss]));
  const [x0, x1] = [Math.min(...steps), Math.max(...steps, Math.min(...steps) + 1)];
  const [y0, y1] = [Math.min(...losses), Math.max(...losses, Math.min(...losses) + 1e-6)];
  const x = (s: number) => pad + ((s - x0) / (x1 - x0)) * (W - 2 * pad);
  const y = (l: number) => H - pad - ((l - y0) / (y1 - y0)) * (H - 2 * pad);
  const line = metrics.map((m) => `${x(m.step).toFixed(1)},${y(m.loss).toFixed(1)}`).join(" ");
  const evals = metrics.filter((m) => m.eval_loss !== undefined);
  return (
    <svg viewBox={`0 0 ${W} ${H}`} className="loss-curve" data-testid="loss-curve" role="img" aria-label={t("lossCurve")}>
      <line x1={pad} y1={H - pad} x2={W - pad} y2={H - pad} className="axis" />
      <line x1={pad} y1={pad} x2={pad} y2={H - pad} className="axis" />
      <text x={pad} y={pad - 8} className="tick">{y1.toFixed(3)}</text>
      <text x={pad} y={H - 8} className="tick">{y0.toFixed(3)}</text>
      <text x={W - pad} y={H - 8} className="tick" textAnchor="end">step {x1}</text>
      <polyline points={line} className="loss" />
      {evals.map((m) => (
        <circle key={m.step} cx={x(m.step)} cy={y(m.eval_loss!)} r={3.5} className="eval" />
      ))}
    </svg>
  );
}

/** Training data: import a JSONL file, draft pairs from a collection, review drafts. */
function Datasets() {
  const { t } = useI18n();
  const [list, setList] = useState<DatasetSummary[]>([]);
  const [collections, setCollections] = useState<CollectionInfo[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [drafts, setDrafts] = useState<DraftPair[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [path, setPath] = useState("");
  const [importName, setImportName] = useState("");
  const [collection, setCollection] = useState("");
  const [draftName, setDraftName] = useState("manual-qa");
  const [limit, setLimit] = useState(5);

  const refresh = useCallback(() => {
    api
      .datasets()
      .then((r) => setList(r.datasets))
      .catch((e) => setError(String(e.message ?? e)));
    if (selected) {
      api
        .drafts(selected)
        .then((r) => setDrafts(r.drafts))
        .catch(() => setDrafts([]));
    }
  }, [selected]);
  useEffect(() => {
    refresh();
    const id = setInterval(refresh, POLL_MS);
    return () => clearInterval(id);
  }, [refresh]);
  useEffect(() => {
    api
      .collections()
      .then((r) => {
        setCollections(r.collections);
        setCollection((c) => c || r.collections[0]?.name || "");
      })
      .catch(() => setCollections([]));
  }, []);
  const act = (p: Promise<unknown>, then?: () => void) => {
    setError(null);
    p.then(() => {
      then?.();
      refresh();
    }).catch((e) => setError(String(e.message ?? e)));
  };

  return (
    <div className="card" data-testid="datasets">
      <h2>{t("datasetsTitle")}</h2>
      {error && <p className="error">{error}</p>}
      {list.length === 0 ? (
        <p className="muted">{t("noDatasets")}</p>
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th>{t("datasetName")}</th>
              <th>{t("trainEval")}</th>
              <th>{t("draftsOf")}</th>
            </tr>
          </thead>
          <tbody>
            {list.map((d) => (
              <tr
                key={d.name}
                className={selected === d.name ? "selected" : ""}
                onClick={() => setSelected(d.name)}
                data-testid={`dataset-${d.name}`}
              >
                <td>{d.name}</td>
                <td>
                  {d.train} / {d.eval}
                </td>
                <td>
                  {d.drafts.pending} {t("d_pending")} · {d.drafts.approved} {t("d_approved")} · {d.drafts.rejected}{" "}
                  {t("d_rejected")}
                  {d.synth && (
                    <span className="muted">
                      {" "}
                      — {t("drafting")} {d.synth.done + 1} / {d.synth.total}
                    </span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      {selected && drafts.length > 0 && (
        <div className="drafts" data-testid="drafts">
          <h3>
            {t("draftsOf")}: {selected}
          </h3>
          {drafts.map((d) => (
            <div key={d.id} className={`draft draft-${d.status}`} data-testid="draft" data-status={d.status}>
              <div className="card-head">
                <strong>#{d.id}</strong>
                <span className="muted">
                  {fileName(d.source.document)} p.{d.source.page} · {t("groundedShare")} {d.grounded.toFixed(2)}
                </span>
                <span className="badge">{t(`d_${d.status}` as Key)}</span>
                <span className="spacer" />
                <button
                  className="btn"
                  onClick={() => act(api.reviewDrafts(selected, { approve: [d.id] }))}
                  disabled={d.status === "approved"}
                  data-testid="approve-draft"
                >
                  {t("approve")}
                </button>
                <button
                  className="btn"
                  onClick={() => act(api.reviewDrafts(selected, { reject: [d.id] }))}
                  disabled={d.status === "rejected"}
                >
                  {t("reject")}
                </button>
              </div>
              <p>Q: {d.question}</p>
              <p>A: {d.answer}</p>
            </div>
          ))}
        </div>
      )}

      <div className="add-form">
        <h3>{t("draftFromCollection")}</h3>
        <div className="row">
          <select value={collection} onChange={(e) => setCollection(e.target.value)} data-testid="synth-collection">
            {collections.map((c) => (
              <option key={c.name} value={c.name}>
                {c.name}
              </option>
            ))}
          </select>
          <input value={draftName} onChange={(e) => setDraftName(e.target.value)} placeholder={t("datasetName")} data-testid="synth-name" />
          <label>
            {t("draftCount")}{" "}
            <input type="number" min={1} max={200} value={limit} onChange={(e) => setLimit(Number(e.target.value))} data-testid="synth-limit" />
          </label>
          <button
            className="btn primary"
            disabled={!collection || !draftName.trim()}
            onClick={() => act(api.synthDataset(draftName.trim(), collection, limit), () => setSelected(draftName.trim()))}
            data-testid="synth-start"
          >
            {t("draftBtn")}
          </button>
        </div>
        <h3>{t("importDataset")}</h3>
        <div className="row">
          <input value={path} onChange={(e) => setPath(e.target.value)} placeholder="/srv/data/faq.jsonl" className="mono" data-testid="import-path" />
          <input value={importName} onChange={(e) => setImportName(e.target.value)} placeholder={t("datasetName")} data-testid="import-name" />
          <button
            className="btn"
            disabled={!path.trim() || !importName.trim()}
            onClick={() => act(api.importDataset(path.trim(), importName.trim()), () => setSelected(importName.trim()))}
            data-testid="import-start"
          >
            {t("importBtn")}
          </button>
        </div>
      </div>
    </div>
  );
}

/** Trained adapters: the "did it help?" verdict, its plot, activate / deactivate. */
function Adapters({ refreshKey }: { refreshKey: number }) {
  const { t } = useI18n();
  const [list, setList] = useState<AdapterInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(() => {
    api
      .adapters()
      .then((r) => setList(r.adapters))
      .catch((e) => setError(String(e.message ?? e)));
  }, []);
  // Re-read when a job finishes: its adapter (and report) appear then.
  useEffect(refresh, [refresh, refreshKey]);
  const toggle = (a: AdapterInfo) => {
    setError(null);
    (a.served ? api.unloadAdapter(a.name) : api.loadAdapter(a.name))
      .then(refresh)
      .catch((e) => setError(String(e.message ?? e)));
  };
  return (
    <div className="card" data-testid="adapters">
      <h2>{t("adaptersTitle")}</h2>
      {error && <p className="error">{error}</p>}
      {list === null ? null : list.length === 0 ? (
        <p className="muted">{t("noAdapters")}</p>
      ) : (
        list.map((a) => (
          <div key={a.name} className="adapter" data-testid={`adapter-${a.name}`}>
            <div className="card-head">
              <strong>{a.name}</strong>
              <span className="muted">
                {t("baseModel")}: {a.base_model ?? "?"} · r={a.rank ?? "?"}
              </span>
              <span className="spacer" />
              {a.served && a.model && (
                <span className="muted">
                  {t("servedAs")}: <code>{a.model}</code>
                </span>
              )}
              <button className={`btn ${a.served ? "" : "primary"}`} onClick={() => toggle(a)}>
                {a.served ? t("deactivate") : t("activate")}
              </button>
            </div>
            {a.report ? (
              <>
                <p className={`verdict verdict-${a.report.verdict}`}>
                  {t("verdict")}: {t(`v_${a.report.verdict}` as Key)} ({a.report.examples}) — {t("exactMatch")}{" "}
                  {a.report.base.exact_match.toFixed(2)} → {a.report.tuned.exact_match.toFixed(2)}, {t("charF1")}{" "}
                  {a.report.base.char_f1.toFixed(2)} → {a.report.tuned.char_f1.toFixed(2)}
                </p>
                {a.report.plot && <img className="report-plot" src={a.report.plot} alt={a.report.summary} />}
              </>
            ) : (
              <p className="muted">{t("noReport")}</p>
            )}
          </div>
        ))
      )}
    </div>
  );
}

export function Training() {
  const { t } = useI18n();
  const [jobs, setJobs] = useState<TrainingJob[] | null>(null);
  const [selected, setSelected] = useState<number | null>(null);
  const [metrics, setMetrics] = useState<StepMetrics[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [toml, setToml] = useState(TEMPLATE);
  const [at, setAt] = useState("");

  const refresh = useCallback(async () => {
    try {
      const r = await api.trainingJobs();
      setJobs(r.jobs);
      setSelected((s) => s ?? r.jobs[0]?.id ?? null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);

  useEffect(() => {
    refresh();
    const timer = setInterval(refresh, POLL_MS);
    return () => clearInterval(timer);
  }, [refresh]);

  const selectedJob = jobs?.find((j) => j.id === selected);
  useEffect(() => {
    if (selected === null) return;
    api
      .trainingJob(selected)
      .then((r) => setMetrics(r.metrics))
      .catch((e: Error) => setError(e.message));
    // Reload the curve whenever the selected job reports a new step.
  }, [selected, selectedJob?.step, selectedJob?.state]);

  async function act(f: () => Promise<unknown>) {
    try {
      await f();
      setError(null);
      await refresh();
    } catch (e) {
      setError((e as Error).message);
    }
  }

  return (
    <div className="page" data-testid="training-screen">
      <header className="page-head">
        <h1>{t("trainingTitle")}</h1>
      </header>
      <p className="muted">{t("trainingBody")}</p>
      {error && (
        <div className="error-box" role="alert">
          {t("errorPrefix")}: {error}
        </div>
      )}

      <div className="card">
        <div className="card-head">
          <h2>{t("trainingJobs")}</h2>
        </div>
        {jobs && jobs.length === 0 && <p className="muted">{t("noTrainingJobs")}</p>}
        {jobs && jobs.length > 0 && (
          <table className="table" data-testid="training-jobs">
            <thead>
              <tr>
                <th>{t("jobName")}</th>
                <th>{t("jobState")}</th>
                <th>{t("progress")}</th>
                <th className="num">{t("loss")}</th>
                <th className="num">{t("tokensPerS")}</th>
                <th className="num">{t("eta")}</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => {
                const pct = j.total_steps ? Math.round((100 * j.step) / j.total_steps) : 0;
                const cls = j.state === "failed" ? "bad" : j.state === "running" ? "busy" : j.state === "done" ? "ok" : "idle";
                return (
                  <tr
                    key={j.id}
                    className={selected === j.id ? "selected" : ""}
                    onClick={() => setSelected(j.id)}
                    data-testid="training-job"
                    data-state={j.state}
                  >
                    <td>
                      #{j.id} {j.name}
                      {j.error && <div className="bad-text small">{j.error}</div>}
                    </td>
                    <td>
                      <span className={`badge ${cls}`}>{t(`js_${j.state}` as Key)}</span>
                    </td>
                    <td>
                      <div className="progress small-progress" role="progressbar" aria-valuenow={pct}>
                        <div className={`progress-bar ${j.state === "running" ? "running" : "done"}`} style={{ width: `${pct}%` }} />
                      </div>
                      <span className="muted small">
                        {j.step} / {j.total_steps ?? "?"}
                      </span>
                    </td>
                    <td className="num">{j.loss?.toFixed(4) ?? ""}</td>
                    <td className="num">{j.tokens_per_s?.toFixed(0) ?? ""}</td>
                    <td className="num">{j.state === "running" ? duration(j.eta_s) : ""}</td>
                    <td>
                      {(j.state === "queued" || j.state === "running") && (
                        <button className="btn small ghost danger" onClick={() => act(() => api.cancelTraining(j.id))} data-testid="cancel-job">
                          {t("cancel")}
                        </button>
                      )}
                      {(j.state === "cancelled" || j.state === "failed") && (
                        <button className="btn small" onClick={() => act(() => api.resumeTraining(j.id))} data-testid="resume-job">
                          {t("resume")}
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </div>

      {selectedJob && (
        <div className="card">
          <div className="card-head">
            <h2>
              {t("lossCurve")}: #{selectedJob.id} {selectedJob.name}
            </h2>
            <span className="spacer" />
            {selectedJob.eval_loss !== null && (
              <span className="muted">
                {t("evalLoss")}: {selectedJob.eval_loss.toFixed(4)}
              </span>
            )}
          </div>
          <LossCurve metrics={metrics} />
        </div>
      )}

      <Datasets />

      <Adapters refreshKey={(jobs ?? []).filter((j) => j.state === "done").length} />

      <div className="card add-form">
        <h2>{t("submitJob")}</h2>
        <label>
          {t("jobToml")}
          <textarea rows={8} value={toml} onChange={(e) => setToml(e.target.value)} className="mono" data-testid="job-toml" />
        </label>
        <label>
          {t("startAt")}
          <input type="time" value={at} onChange={(e) => setAt(e.target.value)} data-testid="job-at" />
        </label>
        <div>
          <button
            className="btn primary"
            onClick={() => act(() => api.submitTraining(toml, at))}
            disabled={!toml.trim()}
            data-testid="submit-job"
          >
            {t("submitJob")}
          </button>
        </div>
      </div>
    </div>
  );
}
