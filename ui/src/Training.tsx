import { useI18n } from "./i18n";

/** Placeholder until the LoRA trainer (issue 6) has its API. */
export function Training() {
  const { t } = useI18n();
  return (
    <div className="page" data-testid="training-screen">
      <header className="page-head">
        <h1>{t("trainingTitle")}</h1>
      </header>
      <div className="card placeholder">
        <p>{t("trainingBody")}</p>
      </div>
    </div>
  );
}
