// Models: what is installed on this machine, from models/models.toml (and the
// imported models), with role, size, sha256 and licence.
import { useEffect, useState } from "react";
import { api, formatBytes, type AdapterInfo, type ModelInfo } from "./api";
import { useI18n, type Key } from "./i18n";

export function Models() {
  const { t } = useI18n();
  const [models, setModels] = useState<ModelInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [adapters, setAdapters] = useState<AdapterInfo[]>([]);
  useEffect(() => {
    api
      .models()
      .then((r) => setModels(r.models))
      .catch((e: Error) => setError(e.message));
    api
      .adapters()
      .then((r) => setAdapters(r.adapters))
      .catch(() => setAdapters([]));
  }, []);
  return (
    <div className="page" data-testid="models-screen">
      <header className="page-head">
        <h1>{t("modelsTitle")}</h1>
      </header>
      <p className="muted">{t("modelsBody")}</p>
      {error && <div className="error-box">{error}</div>}
      {!models && !error && <p className="muted">{t("loading")}</p>}
      {models && (
        <div className="card">
          <table className="table" data-testid="models-table">
            <thead>
              <tr>
                <th>{t("name")}</th>
                <th>{t("role")}</th>
                <th className="num">{t("size")}</th>
                <th>sha256</th>
                <th>{t("licence")}</th>
                <th>{t("present")}</th>
              </tr>
            </thead>
            <tbody>
              {models.map((m) => (
                <tr key={m.name} data-testid="model-row">
                  <td>
                    <div className="file-name">
                      {m.name} {m.default && <span className="badge idle">{t("defaultModel")}</span>}
                    </div>
                    <div className="model-desc">{m.description}</div>
                    {m.caveat && (
                      <div className="model-desc warn-text">
                        {t("caveat")}: {m.caveat}
                      </div>
                    )}
                  </td>
                  <td className="nowrap">{t(`role_${m.role}` as Key)}</td>
                  <td className="num">{formatBytes(m.size)}</td>
                  <td className="hash">
                    {m.files.map((f) => (
                      <div key={f.path} title={`${f.path}\n${f.sha256}`}>
                        <code>{f.sha256}</code>
                      </div>
                    ))}
                  </td>
                  <td>{m.licence}</td>
                  <td className="nowrap">
                    <span className={`badge ${m.present ? "ok" : "bad"}`}>
                      {m.present ? t("installed") : t("missing")}
                    </span>
                    {m.loaded && (
                      <div>
                        <span className="badge busy">{t("loadedNow")}</span>
                      </div>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {adapters.length > 0 && (
        <div className="card">
          <h2>{t("adaptersTitle")}</h2>
          <table className="table" data-testid="adapters-table">
            <thead>
              <tr>
                <th>{t("name")}</th>
                <th>{t("baseModel")}</th>
                <th className="num">{t("size")}</th>
                <th>sha256</th>
                <th>{t("licence")}</th>
                <th>{t("present")}</th>
              </tr>
            </thead>
            <tbody>
              {adapters.map((a) => (
                <tr key={a.name} data-testid="adapter-row">
                  <td>
                    <div className="file-name">{a.name}</div>
                    <div className="model-desc">
                      LoRA r={a.rank ?? "?"} · {(a.targets ?? []).join(", ")}
                    </div>
                  </td>
                  <td>{a.base_model ?? "?"}</td>
                  <td className="num">{formatBytes(a.size)}</td>
                  <td className="hash">
                    <code>{a.sha256 ?? ""}</code>
                  </td>
                  <td>{t("adapterLicence")}</td>
                  <td className="nowrap">
                    {a.served && <span className="badge busy">{t("loadedNow")}</span>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
