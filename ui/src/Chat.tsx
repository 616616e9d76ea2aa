// Chat over the documents: several conversations (kept in localStorage), a
// collection picker, streamed answers whose citation markers [n] are chips that
// open the source panel, flagged sentences, refusals with the closest sources,
// copy and 👍/👎 feedback. Follow-up questions send the conversation so far.
import { useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import {
  api,
  ask,
  fileName,
  type AskEvent,
  type Citation,
  type CollectionInfo,
  type SourceRef,
} from "./api";
import { useI18n } from "./i18n";
import { SourcePanel, type SourceTarget } from "./SourcePanel";
import { Icon } from "./Icon";

interface Turn {
  id: string;
  question: string;
  query?: string;
  sources: SourceRef[];
  text: string;
  answer?: string;
  citations: Citation[];
  unsupported: string[];
  grounded?: boolean;
  refused?: boolean;
  error?: string;
  phase: "searching" | "generating" | "done" | "error";
  feedback?: "up" | "down";
}

interface Conversation {
  id: string;
  title: string;
  turns: Turn[];
  updated: number;
}

const STORE = "kura.conversations";

function load(): Conversation[] {
  try {
    const v = JSON.parse(localStorage.getItem(STORE) ?? "[]") as Conversation[];
    // An answer interrupted by a reload will never finish.
    for (const c of v)
      for (const t of c.turns)
        if (t.phase === "searching" || t.phase === "generating") t.phase = "done";
    return v;
  } catch {
    return [];
  }
}

function newId(): string {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
}

export function Chat() {
  const { t } = useI18n();
  const [convs, setConvs] = useState<Conversation[]>(load);
  const [currentId, setCurrentId] = useState<string | null>(() => load()[0]?.id ?? null);
  const [collections, setCollections] = useState<CollectionInfo[]>([]);
  const [picked, setPicked] = useState<string[]>([]);
  const [models, setModels] = useState<string[]>([]);
  const [model, setModel] = useState<string>(() => localStorage.getItem("kura.model") ?? "");
  const [question, setQuestion] = useState("");
  const [busy, setBusy] = useState(false);
  const [panel, setPanel] = useState<SourceTarget | null>(null);
  const abortRef = useRef<AbortController | null>(null);
  const endRef = useRef<HTMLDivElement>(null);

  useEffect(() => {
    api
      .collections()
      .then((r) => setCollections(r.collections))
      .catch(() => setCollections([]));
    api
      .servedModels()
      .then((r) => {
        const chat = r.data.filter((m) => m.role === "chat").map((m) => m.id);
        setModels(chat);
        // A remembered adapter that is no longer served falls back to the default.
        setModel((m) => (chat.includes(m) ? m : ""));
      })
      .catch(() => setModels([]));
  }, []);
  useEffect(() => {
    localStorage.setItem("kura.model", model);
  }, [model]);
  useEffect(() => {
    localStorage.setItem(STORE, JSON.stringify(convs.slice(0, 50)));
  }, [convs]);

  const current = convs.find((c) => c.id === currentId) ?? null;
  const turnCount = current?.turns.length ?? 0;
  const lastText = current?.turns[turnCount - 1]?.text.length ?? 0;
  useEffect(() => {
    endRef.current?.scrollIntoView({ block: "end" });
  }, [currentId, turnCount, lastText]);

  const updateTurn = (convId: string, turnId: string, f: (t: Turn) => Turn) =>
    setConvs((cs) =>
      cs.map((c) =>
        c.id !== convId
          ? c
          : { ...c, updated: Date.now(), turns: c.turns.map((x) => (x.id === turnId ? f(x) : x)) },
      ),
    );

  async function submit() {
    const q = question.trim();
    if (!q || busy) return;
    let conv = current;
    if (!conv) {
      conv = { id: newId(), title: q.slice(0, 40), turns: [], updated: Date.now() };
    }
    const history = conv.turns
      .filter((x) => x.phase === "done" && !x.error)
      .map((x) => ({ question: x.question, answer: x.answer ?? x.text }));
    const turn: Turn = {
      id: newId(),
      question: q,
      sources: [],
      text: "",
      citations: [],
      unsupported: [],
      phase: "searching",
    };
    const convId = conv.id;
    const base = conv;
    setConvs((cs) => [
      { ...base, title: base.turns.length ? base.title : q.slice(0, 40), turns: [...base.turns, turn], updated: Date.now() },
      ...cs.filter((c) => c.id !== convId),
    ]);
    setCurrentId(convId);
    setQuestion("");
    setBusy(true);
    const ctl = new AbortController();
    abortRef.current = ctl;
    const on = (e: AskEvent) => {
      updateTurn(convId, turn.id, (x) => {
        switch (e.event) {
          case "query":
            return { ...x, query: e.data.query };
          case "sources":
            return { ...x, sources: e.data.sources, phase: "generating" };
          case "token":
            return { ...x, text: x.text + e.data.text, phase: "generating" };
          case "citations":
            return {
              ...x,
              answer: e.data.answer,
              citations: e.data.citations,
              unsupported: e.data.unsupported,
            };
          case "done":
            return { ...x, grounded: e.data.grounded, refused: e.data.refused, phase: "done" };
          case "error":
            return { ...x, error: e.data.error.message, phase: "error" };
        }
        return x;
      });
    };
    try {
      await ask(
        { question: q, collections: picked.length ? picked : undefined, history, model: model || undefined },
        on,
        ctl.signal,
      );
      updateTurn(convId, turn.id, (x) => (x.phase === "error" ? x : { ...x, phase: "done" }));
    } catch (err) {
      const aborted = ctl.signal.aborted;
      updateTurn(convId, turn.id, (x) =>
        aborted ? { ...x, phase: "done" } : { ...x, error: String((err as Error).message ?? err), phase: "error" },
      );
    } finally {
      setBusy(false);
      abortRef.current = null;
    }
  }

  function togglePick(name: string) {
    setPicked((p) => (p.includes(name) ? p.filter((x) => x !== name) : [...p, name]));
  }

  async function feedback(turn: Turn, rating: "up" | "down") {
    if (!current) return;
    await api.feedback({
      question: turn.question,
      answer: turn.answer ?? turn.text,
      rating,
      collections: picked,
      citations: turn.citations,
    });
    updateTurn(current.id, turn.id, (x) => ({ ...x, feedback: rating }));
  }

  return (
    <div className="chat">
      <aside className="conv-list" aria-label={t("conversations")}>
        <button
          className="btn primary wide"
          onClick={() => {
            setCurrentId(null);
            setPanel(null);
          }}
          data-testid="new-chat"
        >
          ＋ {t("newChat")}
        </button>
        <div className="conv-head">{t("conversations")}</div>
        <ul>
          {convs.map((c) => (
            <li key={c.id} className={c.id === currentId ? "active" : ""}>
              <button className="conv-item" onClick={() => setCurrentId(c.id)} title={c.title}>
                {c.title || t("untitled")}
              </button>
              <button
                className="icon-btn"
                title={t("deleteChat")}
                aria-label={t("deleteChat")}
                onClick={() => {
                  setConvs((cs) => cs.filter((x) => x.id !== c.id));
                  if (c.id === currentId) setCurrentId(null);
                }}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      </aside>

      <section className="chat-main">
        <div className="collection-bar">
          <span className="label">{t("collections")}</span>
          {collections.length === 0 ? (
            <span className="muted">{t("noCollections")}</span>
          ) : (
            <>
              <button
                className={`pill ${picked.length === 0 ? "on" : ""}`}
                onClick={() => setPicked([])}
              >
                {t("allCollections")}
              </button>
              {collections.map((c) => (
                <button
                  key={c.name}
                  className={`pill ${picked.includes(c.name) ? "on" : ""}`}
                  onClick={() => togglePick(c.name)}
                  data-testid={`pick-${c.name}`}
                >
                  {c.name} <span className="pill-count">{c.documents}</span>
                </button>
              ))}
            </>
          )}
          {models.length > 1 && (
            <label className="model-pick">
              <span className="label">{t("modelPick")}</span>
              <select value={model} onChange={(e) => setModel(e.target.value)} data-testid="model-pick">
                <option value="">{t("defaultModel")}</option>
                {models.map((m) => (
                  <option key={m} value={m}>
                    {m}
                  </option>
                ))}
              </select>
            </label>
          )}
        </div>

        <div className="messages" data-testid="messages">
          {!current || current.turns.length === 0 ? (
            <div className="empty-chat">
              <div className="empty-mark">蔵</div>
              <h2>{t("emptyChatTitle")}</h2>
              <p>{t("emptyChatBody")}</p>
            </div>
          ) : (
            current.turns.map((turn) => (
              <TurnView
                key={turn.id}
                turn={turn}
                onOpen={setPanel}
                onFeedback={(r) => feedback(turn, r)}
              />
            ))
          )}
          <div ref={endRef} />
        </div>

        <form
          className="composer"
          onSubmit={(e) => {
            e.preventDefault();
            submit();
          }}
        >
          <textarea
            value={question}
            onChange={(e) => setQuestion(e.target.value)}
            placeholder={t("askPlaceholder")}
            rows={2}
            data-testid="question"
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
                e.preventDefault();
                submit();
              }
            }}
          />
          {busy ? (
            <button type="button" className="btn" onClick={() => abortRef.current?.abort()}>
              {t("stop")}
            </button>
          ) : (
            <button type="submit" className="btn primary" disabled={!question.trim()} data-testid="send">
              {t("send")}
            </button>
          )}
        </form>
      </section>

      {panel && <SourcePanel target={panel} onClose={() => setPanel(null)} />}
    </div>
  );
}

const MARKER = /\[(\d+(?:\s*[,、]\s*\d+)*)\]/g;

/** The answer text with [n] markers as chips and unsupported sentences marked. */
function AnswerText({
  text,
  unsupported,
  open,
}: {
  text: string;
  unsupported: string[];
  open: (n: number) => void;
}) {
  const { t } = useI18n();
  const parts = useMemo(() => {
    // Ranges of the flagged sentences in the text.
    const ranges: [number, number][] = [];
    for (const s of unsupported) {
      const needle = s.trim();
      if (!needle) continue;
      const i = text.indexOf(needle);
      if (i >= 0) ranges.push([i, i + needle.length]);
    }
    ranges.sort((a, b) => a[0] - b[0]);
    const out: { text: string; flagged: boolean }[] = [];
    let pos = 0;
    for (const [a, b] of ranges) {
      if (a < pos) continue;
      if (a > pos) out.push({ text: text.slice(pos, a), flagged: false });
      out.push({ text: text.slice(a, b), flagged: true });
      pos = b;
    }
    if (pos < text.length) out.push({ text: text.slice(pos), flagged: false });
    return out;
  }, [text, unsupported]);

  const withChips = (s: string, key: string): ReactNode[] => {
    const nodes: ReactNode[] = [];
    let last = 0;
    for (const m of s.matchAll(MARKER)) {
      const at = m.index ?? 0;
      if (at > last) nodes.push(s.slice(last, at));
      for (const n of m[1].split(/\s*[,、]\s*/).map(Number)) {
        nodes.push(
          <button
            key={`${key}-${at}-${n}`}
            className="chip"
            onClick={() => open(n)}
            data-testid="citation-chip"
            title={`${t("sourcePanel")} [${n}]`}
          >
            {n}
          </button>,
        );
      }
      last = at + m[0].length;
    }
    if (last < s.length) nodes.push(s.slice(last));
    return nodes;
  };

  return (
    <div className="answer-text">
      {parts.map((p, i) =>
        p.flagged ? (
          <span key={i} className="unsupported" title={t("unsupportedTitle")} data-testid="unsupported">
            <span className="warn" aria-label={t("unsupportedTitle")}>
              <Icon name="warn" size={14} />
            </span>
            {withChips(p.text, `u${i}`)}
          </span>
        ) : (
          <span key={i}>{withChips(p.text, `p${i}`)}</span>
        ),
      )}
    </div>
  );
}

function TurnView({
  turn,
  onOpen,
  onFeedback,
}: {
  turn: Turn;
  onOpen: (s: SourceTarget) => void;
  onFeedback: (r: "up" | "down") => void;
}) {
  const { t } = useI18n();
  const [copied, setCopied] = useState(false);
  const text = turn.answer ?? turn.text;

  const openN = (n: number) => {
    const c = turn.citations.find((x) => x.n === n);
    const s = turn.sources.find((x) => x.n === n);
    const target = c ?? s;
    if (target)
      onOpen({
        n,
        chunkId: target.chunk_id,
        doc: target.doc,
        page: target.page,
        quote: c?.quote,
      });
  };

  const copy = async () => {
    const lines = [text];
    if (turn.citations.length) {
      lines.push("");
      for (const c of turn.citations) lines.push(`[${c.n}] ${fileName(c.doc)} ${t("page")}${c.page}`);
    }
    const s = lines.join("\n");
    try {
      await navigator.clipboard.writeText(s);
    } catch {
      const ta = document.createElement("textarea");
      ta.value = s;
      document.body.appendChild(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };

  const listed: { n: number; doc: string; page: number; chunk_id: number; text: string; flagged: boolean }[] =
    turn.refused || turn.citations.length === 0
      ? turn.sources.map((s) => ({ n: s.n, doc: s.doc, page: s.page, chunk_id: s.chunk_id, text: s.snippet, flagged: false }))
      : turn.citations.map((c) => ({ n: c.n, doc: c.doc, page: c.page, chunk_id: c.chunk_id, text: c.quote, flagged: !c.supported }));

  return (
    <div className="turn" data-testid="turn">
      <div className="bubble question">{turn.question}</div>
      <div className={`bubble answer ${turn.refused ? "refused" : ""}`} data-testid="answer">
        {turn.query && turn.query !== turn.question && (
          <div className="rewritten">
            {t("rewrittenQuery")}: <q>{turn.query}</q>
          </div>
        )}
        {turn.phase === "searching" && <div className="status-line"><span className="spinner" /> {t("searching")}</div>}
        {turn.phase === "generating" && !text && (
          <div className="status-line"><span className="spinner" /> {t("generating")}</div>
        )}
        {turn.refused ? (
          <div className="refusal" data-testid="refusal">
            <div className="refusal-title">
              <Icon name="info" /> {t("refusalTitle")}
            </div>
            <p>{t("refusalBody")}</p>
          </div>
        ) : (
          text && (
            <AnswerText
              text={text}
              unsupported={turn.unsupported}
              open={openN}
            />
          )
        )}
        {turn.phase === "generating" && text && <span className="cursor" aria-hidden />}
        {turn.error && (
          <div className="error-box" role="alert">
            {t("errorPrefix")}: {turn.error}
          </div>
        )}
        {turn.phase === "done" && !turn.refused && turn.unsupported.length > 0 && (
          <div className="note warn-note">{t("unsupportedNote")}</div>
        )}
        {turn.phase === "done" && listed.length > 0 && (
          <div className="source-list">
            <div className="source-list-head">{turn.refused ? t("closestSources") : t("sources")}</div>
            {listed.map((s) => (
              <button
                key={`${s.n}-${s.chunk_id}`}
                className="source-row"
                onClick={() => onOpen({ n: s.n, chunkId: s.chunk_id, doc: s.doc, page: s.page, quote: s.text })}
                data-testid="source-row"
              >
                <span className="chip static">{s.n}</span>
                <span className="source-doc">
                  {fileName(s.doc)} <span className="muted">{t("page")}
                    {s.page}</span>
                  {s.flagged && (
                    <span className="warn">
                      {" "}
                      <Icon name="warn" size={13} />
                    </span>
                  )}
                </span>
                <span className="source-snippet">{s.text}</span>
              </button>
            ))}
          </div>
        )}
        {turn.phase === "done" && !turn.error && (
          <div className="answer-actions">
            {turn.grounded && !turn.refused && <span className="badge ok">
                <Icon name="check" size={13} /> {t("grounded")}
              </span>}
            <span className="spacer" />
            <button className="btn small ghost" onClick={copy} data-testid="copy">
              <Icon name={copied ? "check" : "copy"} size={14} /> {copied ? t("copied") : t("copy")}
            </button>
            <button
              className={`btn small ghost ${turn.feedback === "up" ? "on" : ""}`}
              onClick={() => onFeedback("up")}
              title={t("helpful")}
              aria-label={t("helpful")}
              aria-pressed={turn.feedback === "up"}
              data-testid="thumbs-up"
            >
              <Icon name="up" size={15} />
            </button>
            <button
              className={`btn small ghost ${turn.feedback === "down" ? "on" : ""}`}
              onClick={() => onFeedback("down")}
              title={t("notHelpful")}
              aria-label={t("notHelpful")}
              aria-pressed={turn.feedback === "down"}
              data-testid="thumbs-down"
            >
              <Icon name="down" size={15} />
            </button>
            {turn.feedback && <span className="muted small nowrap">{t("feedbackThanks")}</span>}
          </div>
        )}
      </div>
    </div>
  );
}
