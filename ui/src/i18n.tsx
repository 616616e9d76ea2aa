// Every text the UI shows, in Japanese and English. The language follows the
// browser (navigator.language; in the desktop app the OS locale, passed as
// `?lang=`) until the user picks one; the choice is kept in localStorage.
import { createContext, useContext, useState, type ReactNode } from "react";

export type Lang = "ja" | "en";

const ja = {
  appName: "Kura 蔵",
  tagline: "社内文書 AI アシスタント",
  navChat: "チャット",
  navDocuments: "文書",
  navModels: "モデル",
  navTraining: "学習",
  language: "言語",
  offline: "オフライン動作・データは社外に送信されません",

  newChat: "新しい会話",
  conversations: "会話履歴",
  untitled: "新しい会話",
  deleteChat: "この会話を削除",
  askPlaceholder: "社内文書について質問してください（例：有給休暇は何日前までに申請しますか？）",
  send: "送信",
  stop: "停止",
  collections: "検索対象",
  allCollections: "すべて",
  noCollections: "文書がまだありません。「文書」画面で追加してください。",
  emptyChatTitle: "社内文書に質問する",
  emptyChatBody: "回答には根拠となった文書とページが [1] のように示されます。番号を押すと原文を確認できます。",
  searching: "文書を検索しています…",
  rewrittenQuery: "検索した内容",
  generating: "回答を作成しています…",
  sources: "参照した資料",
  closestSources: "関連しそうな資料",
  page: "p.",
  refusalTitle: "資料に記載が見つかりませんでした",
  refusalBody: "登録されている文書からは、この質問への回答を確認できませんでした。関連しそうな資料を下に示します。",
  unsupportedNote: "警告マークの付いた文は、引用した資料で裏付けを確認できませんでした。",
  unsupportedTitle: "資料で裏付けが確認できない文",
  grounded: "すべての文が資料で裏付けられています",
  copy: "コピー",
  copied: "コピーしました",
  helpful: "役に立った",
  notHelpful: "役に立たなかった",
  feedbackThanks: "フィードバックを保存しました",
  errorPrefix: "エラー",
  sourcePanel: "出典",
  close: "閉じる",
  citedPassage: "引用箇所",
  loading: "読み込み中…",

  docsTitle: "文書とコレクション",
  collection: "コレクション",
  documents: "文書数",
  chunks: "チャンク",
  failed: "失敗",
  problemPages: "問題のあるページ",
  addDocuments: "文書を追加",
  addHelp: "このサーバー（ワークステーション）上のファイルまたはフォルダーのパスを 1 行に 1 つ入力してください。フォルダーは中のファイルをすべて取り込みます（PDF, Word, Excel, PowerPoint, HTML, Markdown, テキスト）。",
  collectionName: "コレクション名",
  paths: "パス",
  chooseFolder: "フォルダーを選択…",
  openFile: "ファイルを開く",
  tokenTitle: "アクセストークンが必要です",
  tokenBody: "このサーバーはアクセストークンで保護されています。管理者から受け取ったトークンを入力してください。",
  tokenSubmit: "接続",
  startIngest: "取り込み開始",
  ingesting: "取り込み中",
  ingestDone: "取り込み完了",
  ingestFailed: "取り込みに失敗しました",
  reindex: "再インデックス",
  reindexHelp: "変更・追加・削除されたファイルを反映します",
  delete: "削除",
  confirmDelete: "この文書を索引から削除しますか？（元のファイルは削除されません）",
  path: "パス",
  status: "状態",
  pages: "ページ",
  pagesUnit: "ページ",
  loadedNow: "使用中",
  reason: "理由",
  noDocuments: "このコレクションには文書がありません。",
  selectCollection: "コレクションを選んでください",
  st_indexed: "索引済み",
  st_failed: "失敗",
  st_pending: "待機中",
  st_processing: "処理中",
  st_added: "追加",
  st_updated: "更新",
  st_unchanged: "変更なし",
  q_garbled: "文字化け",
  q_empty: "テキストなし",
  summaryLine: "{added} 件追加・{updated} 件更新・{unchanged} 件変更なし・{removed} 件削除・{failed} 件失敗（{pages} ページ、{chunks} チャンク、{seconds} 秒）",
  filesProgress: "{done} / {total} ファイル",

  modelsTitle: "インストール済みモデル",
  modelsBody: "モデルはすべてこのマシン上のファイルで、読み込み前に sha256 で検証されます。",
  name: "名前",
  role: "用途",
  size: "サイズ",
  licence: "ライセンス",
  present: "状態",
  installed: "インストール済み",
  missing: "未インストール",
  role_chat: "チャット",
  role_embedding: "埋め込み",
  defaultModel: "既定",
  caveat: "注記",

  trainingTitle: "学習（LoRA ファインチューニング）",
  trainingBody: "社内の Q&A データでモデルを LoRA 調整します。ジョブはキューに入り、学習ランナー（kura jobs run）が開始時刻に実行します。",
  trainingJobs: "学習ジョブ",
  noTrainingJobs: "学習ジョブはまだありません。",
  jobName: "ジョブ",
  jobState: "状態",
  progress: "進捗",
  loss: "損失",
  evalLoss: "評価損失",
  tokensPerS: "トークン/秒",
  eta: "残り時間",
  cancel: "中止",
  resume: "再開",
  lossCurve: "損失の推移",
  noMetrics: "まだ記録がありません（ジョブの開始を待っています）。",
  submitJob: "ジョブを登録",
  jobToml: "ジョブ設定（job.toml）",
  startAt: "開始時刻（空欄なら今すぐ）",
  js_queued: "待機中",
  js_running: "実行中",
  js_done: "完了",
  js_failed: "失敗",
  js_cancelled: "中止",
  modelPick: "モデル",
  adaptersTitle: "アダプタ（学習済み LoRA）",
  noAdapters: "アダプタはまだありません。学習ジョブが完了するとここに表示されます。",
  baseModel: "ベースモデル",
  verdict: "評価",
  v_better: "改善（ベースモデルを上回りました）",
  v_worse: "悪化（ベースモデルを下回りました）",
  v_mixed: "まちまち",
  v_no_change: "差なし",
  noReport: "評価レポートなし",
  activate: "有効化",
  deactivate: "無効化",
  servedAs: "チャットで選べるモデル名",
  exactMatch: "完全一致",
  charF1: "文字F1",
};

type Dict = typeof ja;

const en: Dict = {
  appName: "Kura 蔵",
  tagline: "Private document assistant",
  navChat: "Chat",
  navDocuments: "Documents",
  navModels: "Models",
  navTraining: "Training",
  language: "Language",
  offline: "Runs offline — no data leaves this machine",

  newChat: "New conversation",
  conversations: "Conversations",
  untitled: "New conversation",
  deleteChat: "Delete this conversation",
  askPlaceholder: "Ask about your documents (e.g. How many days in advance must paid leave be requested?)",
  send: "Send",
  stop: "Stop",
  collections: "Search in",
  allCollections: "All",
  noCollections: "No documents yet. Add some on the Documents screen.",
  emptyChatTitle: "Ask your documents",
  emptyChatBody: "Answers cite the document and page behind each statement, like [1]. Click a number to read the source.",
  searching: "Searching the documents…",
  rewrittenQuery: "Searched for",
  generating: "Writing the answer…",
  sources: "Sources",
  closestSources: "Closest sources",
  page: "p.",
  refusalTitle: "The documents do not say",
  refusalBody: "The indexed documents do not answer this question. These are the closest passages found.",
  unsupportedNote: "Sentences with a warning mark are not backed by the sources they cite.",
  unsupportedTitle: "Not backed by the sources",
  grounded: "Every sentence is backed by a source",
  copy: "Copy",
  copied: "Copied",
  helpful: "Helpful",
  notHelpful: "Not helpful",
  feedbackThanks: "Feedback saved",
  errorPrefix: "Error",
  sourcePanel: "Source",
  close: "Close",
  citedPassage: "Cited passage",
  loading: "Loading…",

  docsTitle: "Documents and collections",
  collection: "Collection",
  documents: "Documents",
  chunks: "Chunks",
  failed: "Failed",
  problemPages: "Problem pages",
  addDocuments: "Add documents",
  addHelp: "Enter paths of files or folders on this server (the workstation), one per line. Folders are read recursively (PDF, Word, Excel, PowerPoint, HTML, Markdown, text).",
  collectionName: "Collection name",
  paths: "Paths",
  chooseFolder: "Choose folder…",
  openFile: "Open file",
  tokenTitle: "Access token required",
  tokenBody: "This server is protected by an access token. Enter the token your administrator gave you.",
  tokenSubmit: "Connect",
  startIngest: "Start ingest",
  ingesting: "Ingesting",
  ingestDone: "Ingest finished",
  ingestFailed: "Ingest failed",
  reindex: "Re-index",
  reindexHelp: "Picks up changed, new and deleted files",
  delete: "Delete",
  confirmDelete: "Remove this document from the index? (The file itself is not deleted.)",
  path: "Path",
  status: "Status",
  pages: "Pages",
  pagesUnit: "pages",
  loadedNow: "In use",
  reason: "Reason",
  noDocuments: "This collection has no documents.",
  selectCollection: "Select a collection",
  st_indexed: "Indexed",
  st_failed: "Failed",
  st_pending: "Waiting",
  st_processing: "Processing",
  st_added: "Added",
  st_updated: "Updated",
  st_unchanged: "Unchanged",
  q_garbled: "Garbled text",
  q_empty: "No text",
  summaryLine: "{added} added, {updated} updated, {unchanged} unchanged, {removed} removed, {failed} failed ({pages} pages, {chunks} chunks in {seconds} s)",
  filesProgress: "{done} / {total} files",

  modelsTitle: "Installed models",
  modelsBody: "Every model is a file on this machine, checked against its sha256 before it is loaded.",
  name: "Name",
  role: "Role",
  size: "Size",
  licence: "Licence",
  present: "State",
  installed: "Installed",
  missing: "Not installed",
  role_chat: "Chat",
  role_embedding: "Embedding",
  defaultModel: "default",
  caveat: "Note",

  trainingTitle: "Training (LoRA fine-tuning)",
  trainingBody: "Tune the model on your own Q&A data with LoRA. Jobs are queued and run by the training runner (kura jobs run) at their start time.",
  trainingJobs: "Training jobs",
  noTrainingJobs: "No training jobs yet.",
  jobName: "Job",
  jobState: "State",
  progress: "Progress",
  loss: "Loss",
  evalLoss: "Eval loss",
  tokensPerS: "Tokens/s",
  eta: "Time left",
  cancel: "Cancel",
  resume: "Resume",
  lossCurve: "Loss curve",
  noMetrics: "Nothing recorded yet (waiting for the job to start).",
  submitJob: "Submit a job",
  jobToml: "Job settings (job.toml)",
  startAt: "Start at (empty: now)",
  js_queued: "Queued",
  js_running: "Running",
  js_done: "Done",
  js_failed: "Failed",
  js_cancelled: "Cancelled",
  modelPick: "Model",
  adaptersTitle: "Adapters (trained LoRA)",
  noAdapters: "No adapters yet. They appear here when a training job finishes.",
  baseModel: "Base model",
  verdict: "Evaluation",
  v_better: "Better: the adapter beat the base model",
  v_worse: "Worse: the adapter did not beat the base model",
  v_mixed: "Mixed result",
  v_no_change: "No change",
  noReport: "no evaluation report",
  activate: "Activate",
  deactivate: "Deactivate",
  servedAs: "model name in chat",
  exactMatch: "Exact match",
  charF1: "Char F1",
};

export type Key = keyof Dict;
const dicts: Record<Lang, Dict> = { ja, en };

const STORAGE_KEY = "kura.lang";

export function initialLang(): Lang {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved === "ja" || saved === "en") return saved;
  // The desktop app passes the OS locale (`?lang=`): WebKitGTK's navigator.language
  // can say en-US on a Japanese desktop.
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked === "ja" || asked === "en") return asked;
  return (navigator.language || "en").toLowerCase().startsWith("ja") ? "ja" : "en";
}

interface I18n {
  lang: Lang;
  setLang: (l: Lang) => void;
  t: (key: Key, vars?: Record<string, string | number>) => string;
}

const Ctx = createContext<I18n | null>(null);

export function I18nProvider({ children }: { children: ReactNode }) {
  const [lang, setLangState] = useState<Lang>(initialLang);
  const setLang = (l: Lang) => {
    localStorage.setItem(STORAGE_KEY, l);
    document.documentElement.lang = l;
    setLangState(l);
  };
  document.documentElement.lang = lang;
  const t = (key: Key, vars?: Record<string, string | number>) => {
    let s: string = dicts[lang][key] ?? key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
    return s;
  };
  return <Ctx.Provider value={{ lang, setLang, t }}>{children}</Ctx.Provider>;
}

export function useI18n(): I18n {
  const c = useContext(Ctx);
  if (!c) throw new Error("useI18n outside I18nProvider");
  return c;
}
