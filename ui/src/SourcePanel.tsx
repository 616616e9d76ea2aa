// The source panel: the page a citation points to, reconstructed by the server
// from its chunks, with the cited chunk's span highlighted and scrolled into view.
import { useEffect, useRef, useState } from "react";
import { api, chars, fileName, type PageView } from "./api";
import { useI18n } from "./i18n";
import { desktop } from "./desktop";

export interface SourceTarget {
  n: number;
  chunkId: number;
  doc: string;
  page: number;
  quote?: string;
}

export function SourcePanel({ target, onClose }: { target: SourceTarget; onClose: () => void }) {
  const { t } = useI18n();
  const [view, setView] = useState<PageView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const markRef = useRef<HTMLElement>(null);

  useEffect(() => {
    setView(null);
    setError(null);
    api
      .page(target.chunkId)
      .then(setView)
      .catch((e: Error) => setError(e.message));
  }, [target.chunkId]);

  useEffect(() => {
    markRef.current?.scrollIntoView({ block: "center" });
  }, [view]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);

  let body = null;
  if (view) {
    // Offsets are in characters (code points), as the server counts them.
    const cs = chars(view.text);
    const start = Math.max(0, Math.min(view.highlight.start, cs.length));
    const end = Math.max(start, Math.min(view.highlight.end, cs.length));
    body = (
      <div className="page-text" data-testid="page-text">
        {cs.slice(0, start).join("")}
        <mark ref={markRef} className="cited" data-testid="highlight">
          {cs.slice(start, end).join("")}
        </mark>
        {cs.slice(end).join("")}
      </div>
    );
  }

  return (
    <aside className="source-panel" data-testid="source-panel" aria-label={t("sourcePanel")}>
      <header>
        <div>
          <div className="panel-kicker">
            {t("sourcePanel")} <span className="chip static">{target.n}</span>
          </div>
          <div className="panel-title" title={target.doc}>
            {fileName(view?.doc ?? target.doc)}
          </div>
          <div className="muted">
            {t("page")}
            {view?.page ?? target.page}
            {desktop.available() && (
              <button
                className="btn small ghost"
                onClick={() => desktop.openSource(target.chunkId).catch((e) => setError(String(e)))}
                data-testid="open-file"
              >
                {t("openFile")}
              </button>
            )}
          </div>
        </div>
        <button className="icon-btn big" onClick={onClose} aria-label={t("close")} data-testid="close-panel">
          ×
        </button>
      </header>
      {target.quote && (
        <div className="quote-box">
          <div className="quote-label">{t("citedPassage")}</div>
          <div className="quote">{target.quote}</div>
        </div>
      )}
      <div className="panel-body">
        {error && <div className="error-box">{error}</div>}
        {!view && !error && <div className="muted">{t("loading")}</div>}
        {body}
      </div>
    </aside>
  );
}
