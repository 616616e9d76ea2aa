// The shell: navigation between the four screens and the language switch. The
// screen is kept in the URL hash (#/chat, #/documents, …) so a reload or a link
// opens the same screen.
import { useEffect, useState } from "react";
import { useI18n, type Key } from "./i18n";
import { Chat } from "./Chat";
import { Documents } from "./Documents";
import { Models } from "./Models";
import { Training } from "./Training";
import { Icon } from "./Icon";
import { enterToken, UNAUTHORIZED_EVENT } from "./api";

type Screen = "chat" | "documents" | "models" | "training";
const SCREENS: { id: Screen; label: Key; icon: "chat" | "folder" | "model" | "training" }[] = [
  { id: "chat", label: "navChat", icon: "chat" },
  { id: "documents", label: "navDocuments", icon: "folder" },
  { id: "models", label: "navModels", icon: "model" },
  { id: "training", label: "navTraining", icon: "training" },
];

/** Asks for the server's access token after the API answered 401. */
function TokenGate() {
  const { t } = useI18n();
  const [token, setToken] = useState("");
  return (
    <div className="token-gate" role="dialog" aria-modal="true" data-testid="token-gate">
      <form
        className="card"
        onSubmit={(e) => {
          e.preventDefault();
          if (token.trim()) enterToken(token);
        }}
      >
        <h2>
          <Icon name="lock" size={16} /> {t("tokenTitle")}
        </h2>
        <p className="muted">{t("tokenBody")}</p>
        <input
          type="password"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          autoFocus
          data-testid="token-input"
        />
        <button className="btn primary" type="submit" disabled={!token.trim()}>
          {t("tokenSubmit")}
        </button>
      </form>
    </div>
  );
}

function screenFromHash(): Screen {
  const h = location.hash.replace(/^#\/?/, "");
  return (SCREENS.find((s) => s.id === h)?.id ?? "chat") as Screen;
}

export function App() {
  const { t, lang, setLang } = useI18n();
  const [screen, setScreen] = useState<Screen>(screenFromHash);
  const [needToken, setNeedToken] = useState(false);
  useEffect(() => {
    const on = () => setNeedToken(true);
    window.addEventListener(UNAUTHORIZED_EVENT, on);
    return () => window.removeEventListener(UNAUTHORIZED_EVENT, on);
  }, []);
  useEffect(() => {
    const on = () => setScreen(screenFromHash());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return (
    <div className="app">
      <nav className="sidebar" aria-label="main">
        <div className="brand">
          <span className="brand-mark">蔵</span>
          <div>
            <div className="brand-name">Kura</div>
            <div className="brand-tag">{t("tagline")}</div>
          </div>
        </div>
        <ul className="nav">
          {SCREENS.map((s) => (
            <li key={s.id}>
              <a
                href={`#/${s.id}`}
                className={screen === s.id ? "active" : ""}
                data-testid={`nav-${s.id}`}
                aria-current={screen === s.id ? "page" : undefined}
              >
                <span className="nav-icon">
                  <Icon name={s.icon} size={18} />
                </span>
                {t(s.label)}
              </a>
            </li>
          ))}
        </ul>
        <div className="sidebar-foot">
          <div className="lang-switch" role="group" aria-label={t("language")}>
            {(["ja", "en"] as const).map((l) => (
              <button
                key={l}
                className={lang === l ? "on" : ""}
                onClick={() => setLang(l)}
                data-testid={`lang-${l}`}
                aria-pressed={lang === l}
              >
                {l === "ja" ? "日本語" : "English"}
              </button>
            ))}
          </div>
          <div className="offline-note">
            <Icon name="lock" size={13} /> {t("offline")}
          </div>
        </div>
      </nav>
      <main className="main">
        {screen === "chat" && <Chat />}
        {screen === "documents" && <Documents />}
        {screen === "models" && <Models />}
        {screen === "training" && <Training />}
      </main>
      {needToken && <TokenGate />}
    </div>
  );
}
