// The HTTP API of `kura serve` that the UI uses (same origin). Types mirror the
// server's JSON; see src/server/ask.rs and src/server/library_api.rs.

export interface SourceRef {
  n: number;
  doc: string;
  page: number;
  chunk_id: number;
  snippet: string;
  cosine?: number;
  coverage?: number;
}

export interface Citation {
  n: number;
  doc: string;
  page: number;
  chunk_id: number;
  quote: string;
  supported: boolean;
  inferred: boolean;
}

export interface CollectionInfo {
  name: string;
  documents: number;
  chunks: number;
  failed: number;
  problem_pages: number;
}

export interface ProblemPage {
  page: number;
  quality: string;
  reason: string | null;
}

export interface DocumentInfo {
  id: number;
  path: string;
  status: string;
  pages: number;
  size: number;
  extractor: string | null;
  error: string | null;
  problem_pages: ProblemPage[];
}

export interface ModelInfo {
  name: string;
  role: string;
  default: boolean;
  format: string;
  description: string;
  licence: string;
  source: string;
  caveat: string | null;
  origin: string;
  files: { path: string; size: number; sha256: string; present: boolean }[];
  size: number;
  present: boolean;
  loaded: boolean;
}

export interface TrainingJob {
  id: number;
  name: string;
  folder: string;
  state: "queued" | "running" | "done" | "failed" | "cancelled";
  run_at: number;
  submitted_at: number;
  step: number;
  total_steps: number | null;
  loss: number | null;
  tokens_per_s: number | null;
  eta_s: number | null;
  eval_loss: number | null;
  error: string | null;
  cancel_requested: boolean;
}

export interface StepMetrics {
  step: number;
  total_steps: number;
  loss: number;
  tokens_per_s: number;
  eta_s: number;
  eval_loss?: number;
}

export interface PageView {
  doc: string;
  page: number;
  text: string;
  highlight: { start: number; end: number };
}

export interface HistoryTurn {
  question: string;
  answer: string;
}

export type AskEvent =
  | { event: "query"; data: { query: string } }
  | { event: "sources"; data: { sources: SourceRef[]; relevant: boolean } }
  | { event: "token"; data: { text: string } }
  | {
      event: "citations";
      data: { answer: string; citations: Citation[]; unsupported: string[]; removed: number[] };
    }
  | { event: "done"; data: { grounded: boolean; refused: boolean } }
  | { event: "error"; data: { error: { message: string; type: string } } };

export class ApiFailure extends Error {}

// Access token (src/server/auth.rs): a server started with a token (`kura serve
// --token`, and always the desktop app) sets an HttpOnly cookie when the UI is
// opened with `?token=…`, and the browser sends it with every request below
// (`credentials: "same-origin"`, EventSource included). Without it the API answers
// 401; the shell then asks for the token (see `TokenGate` in App.tsx).
export const UNAUTHORIZED_EVENT = "kura-unauthorized";

/** Reloads the UI with `token`: the server turns it into the cookie. */
export function enterToken(token: string) {
  location.assign(`/?token=${encodeURIComponent(token.trim())}${location.hash}`);
}

async function errorOf(r: Response): Promise<ApiFailure> {
  if (r.status === 401) window.dispatchEvent(new Event(UNAUTHORIZED_EVENT));
  let msg = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body?.error?.message) msg = body.error.message;
  } catch {
    /* not JSON */
  }
  return new ApiFailure(msg);
}

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw await errorOf(r);
  return (await r.json()) as T;
}

async function sendJson<T>(method: string, url: string, body?: unknown): Promise<T> {
  const r = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) throw await errorOf(r);
  const text = await r.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/** A LoRA adapter on disk (`GET /api/adapters`). */
export interface AdapterInfo {
  name: string;
  base_model: string | null;
  rank: number | null;
  targets: string[] | null;
  size: number;
  sha256: string | null;
  served: boolean;
  model: string | null;
  report: {
    verdict: "better" | "worse" | "mixed" | "no_change";
    summary: string;
    examples: number;
    base: { loss: number | null; exact_match: number; char_f1: number };
    tuned: { loss: number | null; exact_match: number; char_f1: number };
    plot: string | null;
  } | null;
}

/** A training dataset (`GET /api/datasets`). */
export interface DatasetSummary {
  name: string;
  train: number;
  eval: number;
  drafts: { pending: number; approved: number; rejected: number };
  synth: { done: number; total: number } | null;
}

/** A drafted Q&A pair waiting for review. */
export interface DraftPair {
  id: number;
  question: string;
  answer: string;
  status: "pending" | "approved" | "rejected";
  grounded: number;
  edited: boolean;
  source: { chunk_id: number; document: string; page: number };
}

/** A model the server can answer with (`GET /v1/models`). */
export interface ServedModel {
  id: string;
  role: string;
  parent?: string;
}

export const api = {
  datasets: () => getJson<{ datasets: DatasetSummary[] }>("/api/datasets"),
  importDataset: (path: string, name: string) =>
    sendJson<unknown>("POST", "/api/datasets/import", { path, name }),
  synthDataset: (name: string, collection: string, limit: number) =>
    sendJson<unknown>("POST", `/api/datasets/${encodeURIComponent(name)}/synth`, { collection, limit }),
  drafts: (name: string) =>
    getJson<{ drafts: DraftPair[]; synth: { done: number; total: number } | null }>(
      `/api/datasets/${encodeURIComponent(name)}/drafts`,
    ),
  reviewDrafts: (name: string, body: { approve?: number[]; reject?: number[] }) =>
    sendJson<{ train: number; eval: number }>("POST", `/api/datasets/${encodeURIComponent(name)}/review`, body),
  servedModels: () => getJson<{ data: ServedModel[] }>("/v1/models"),
  adapters: () => getJson<{ adapters: AdapterInfo[] }>("/api/adapters"),
  loadAdapter: (name: string) =>
    sendJson<{ model: string }>("POST", `/api/adapters/${encodeURIComponent(name)}/load`),
  unloadAdapter: (name: string) =>
    sendJson<unknown>("POST", `/api/adapters/${encodeURIComponent(name)}/unload`),
  collections: () => getJson<{ collections: CollectionInfo[] }>("/api/collections"),
  documents: (collection: string) =>
    getJson<{ collection: string; documents: DocumentInfo[] }>(
      `/api/collections/${encodeURIComponent(collection)}/documents`,
    ),
  deleteDocument: (id: number) => sendJson<unknown>("DELETE", `/api/documents/${id}`),
  startIngest: (collection: string, paths: string[]) =>
    sendJson<{ id: string }>("POST", "/api/ingest", { collection, paths }),
  reindex: (collection: string) =>
    sendJson<{ id: string }>("POST", `/api/collections/${encodeURIComponent(collection)}/reindex`),
  jobs: () =>
    getJson<{ jobs: { id: string; collection: string; state: string }[] }>("/api/ingest"),
  models: () => getJson<{ models: ModelInfo[] }>("/api/models"),
  trainingJobs: () => getJson<{ jobs: TrainingJob[] }>("/api/training/jobs"),
  trainingJob: (id: number) =>
    getJson<{ job: TrainingJob; metrics: StepMetrics[] }>(`/api/training/jobs/${id}`),
  submitTraining: (job: string, at: string) =>
    sendJson<{ job: TrainingJob }>("POST", "/api/training/jobs", { job, at: at || undefined }),
  cancelTraining: (id: number) => sendJson<{ job: TrainingJob }>("POST", `/api/training/jobs/${id}/cancel`),
  resumeTraining: (id: number) => sendJson<{ job: TrainingJob }>("POST", `/api/training/jobs/${id}/resume`),
  page: (chunkId: number) => getJson<PageView>(`/api/chunks/${chunkId}/page`),
  feedback: (body: {
    question: string;
    answer: string;
    rating: "up" | "down";
    collections: string[];
    citations: Citation[];
  }) => sendJson<{ id: number }>("POST", "/api/feedback", body),
};

/** Parses one `text/event-stream` block (`event:` + `data:` lines). */
function parseBlock(block: string): { event: string; data: string } | null {
  let event = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { event, data: data.join("\n") } : null;
}

/** POST /api/ask, calling `onEvent` for each server-sent event as it arrives. */
export async function ask(
  body: { question: string; collections?: string[]; history: HistoryTurn[]; model?: string },
  onEvent: (e: AskEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const r = await fetch("/api/ask", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!r.ok || !r.body) throw await errorOf(r);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let cut: number;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const msg = parseBlock(block);
      if (msg) onEvent({ event: msg.event, data: JSON.parse(msg.data) } as AskEvent);
    }
  }
}

/** Splits a string into Unicode code points: the server counts characters that way. */
export function chars(s: string): string[] {
  return Array.from(s);
}

export function fileName(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i >= 0 ? path.slice(i + 1) : path;
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n} B`;
}
