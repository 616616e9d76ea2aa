// End-to-end test of the web UI in a real headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core), against a running `kura serve`
// with the real default models. Started by tests/ui_browser.rs, which sets:
//   KURA_URL          the server, e.g. http://127.0.0.1:41234
//   KURA_CHROMIUM     the browser binary (default /usr/bin/chromium)
//   KURA_SCREENSHOTS  where to write the screenshots
//   KURA_NEW_DOC      a file on the server to add through the Documents screen
//   KURA_TRAIN_JOB    a job.toml (tiny fixture model, a few steps) to submit on the
//                     Training screen; a `kura jobs run` runner is running
//   KURA_TOKEN        the server's access token (`kura serve --token`), typed into
//                     the token prompt the UI shows when the API answers 401
// Exits non-zero, naming the failed step, when anything a user would notice is wrong.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.KURA_URL;
const browserPath = process.env.KURA_CHROMIUM || "/usr/bin/chromium";
const shots = process.env.KURA_SCREENSHOTS || "screenshots";
const newDoc = process.env.KURA_NEW_DOC;
const token = process.env.KURA_TOKEN;
const trainJob = process.env.KURA_TRAIN_JOB;
if (!url || !newDoc || !token || !trainJob) {
  console.error("browser.mjs: set KURA_URL, KURA_NEW_DOC, KURA_TOKEN and KURA_TRAIN_JOB (tests/ui_browser.rs does)");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const ANSWER_TIMEOUT = 15 * 60_000; // the 1.5B model on a loaded 2-core CPU
const INGEST_TIMEOUT = 5 * 60_000;
const TRAIN_TIMEOUT = 5 * 60_000; // a few steps of the tiny fixture model

let step = "start";
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
const log = (...a) => console.log(`[ui-test +${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const t0 = Date.now();

const browser = await chromium.launch({
  executablePath: browserPath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  // navigator.language is ja-JP: the UI must start in Japanese by itself.
  const context = await browser.newContext({
    locale: "ja-JP",
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
  });
  page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const shot = async (name) => {
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(shots, `${name}.png`) });
    log("screenshot", name);
  };

  step = "enter the access token";
  // Opened without the token, the API answers 401 and the UI asks for it; once
  // entered, the server keeps it in an HttpOnly cookie for every later request.
  await page.goto(url);
  await page.getByTestId("token-gate").waitFor();
  await shot("token-ja");
  await page.getByTestId("token-input").fill(token);
  await page.getByTestId("token-input").press("Enter");
  await page.waitForURL((u) => !u.search.includes("token="));
  check(!page.url().includes(token), "the token does not stay in the address bar");
  const cookies = await page.context().cookies();
  check(cookies.some((c) => c.value === token && c.httpOnly), "the token is kept in an HttpOnly cookie");

  step = "open the UI in Japanese";
  await page.getByTestId("nav-chat").waitFor();
  check((await page.getByTestId("token-gate").count()) === 0, "no token prompt once the token is given");
  // The 401s before the token was given were the point of that step; from here on,
  // any failed request is an error.
  consoleErrors.length = 0;
  check((await page.getByTestId("nav-chat").innerText()).includes("チャット"), "navigation is in Japanese for a ja-JP browser");
  check((await page.locator("html").getAttribute("lang")) === "ja", "<html lang=ja>");
  await page.getByTestId("pick-manuals").waitFor();
  await shot("chat-empty-ja");

  step = "ask a Japanese question";
  const question = "有給休暇は何日前までに申請しなければなりませんか？";
  await page.getByTestId("question").fill(question);
  await page.getByTestId("send").click();
  const answer = page.getByTestId("answer").last();
  // Streaming: text must appear while the answer is still being written
  // (the blinking cursor is shown only until `done`).
  await answer.locator(".answer-text").waitFor({ timeout: ANSWER_TIMEOUT });
  const partial = await answer.locator(".answer-text").innerText();
  const streaming = await answer.locator(".cursor").count();
  log(`first text (${partial.length} chars), streaming cursor: ${streaming}`);
  check(partial.length > 0, "answer text appears");
  check(streaming === 1, "text appeared before the answer was complete (streamed)");
  await answer.getByTestId("copy").waitFor({ timeout: ANSWER_TIMEOUT });
  const full = await answer.locator(".answer-text").innerText();
  log("answer:", full.replace(/\s+/g, " "));
  check(full.length >= partial.length, "the answer grew while streaming");
  check(full.replace(/\s+/g, "").includes("営業日"), `the answer gives the notice period in business days: ${full}`);
  check((await page.getByTestId("refusal").count()) === 0, "the answer is not a refusal");
  const chips = answer.getByTestId("citation-chip");
  check((await chips.count()) >= 1, "the answer has at least one citation chip");
  check((await answer.getByTestId("source-row").count()) >= 1, "the cited sources are listed");
  await shot("chat-answer-ja");

  step = "open the source panel";
  await chips.first().click();
  const panel = page.getByTestId("source-panel");
  await panel.waitFor();
  const mark = panel.getByTestId("highlight");
  await mark.waitFor();
  const marked = (await mark.innerText()).trim();
  const pageText = await panel.getByTestId("page-text").innerText();
  log(`source panel: ${(await panel.locator(".panel-title").innerText())} — highlight ${marked.length} of ${pageText.length} chars`);
  check(marked.length > 10, "the cited passage is highlighted");
  check(pageText.length > marked.length, "the whole page is shown around the passage");
  check(pageText.includes(marked.slice(0, 10)), "the highlight is inside the page text");
  check((await panel.locator(".panel-title").innerText()).length > 0, "the panel names the document");
  await shot("chat-source-ja");

  step = "feedback";
  await answer.getByTestId("thumbs-up").click();
  await answer.getByText("フィードバックを保存しました").waitFor();

  step = "switch to English";
  await page.getByTestId("lang-en").click();
  check((await page.getByTestId("nav-chat").innerText()).includes("Chat"), "navigation switches to English");
  check((await page.getByTestId("nav-documents").innerText()).includes("Documents"), "Documents in English");
  await shot("chat-source-en");
  await page.reload();
  await page.getByTestId("nav-chat").waitFor();
  check((await page.getByTestId("nav-chat").innerText()).includes("Chat"), "the language choice survives a reload");
  check((await page.getByTestId("turn").count()) === 1, "the conversation is kept after a reload");
  await shot("chat-answer-en");

  step = "documents screen";
  await page.getByTestId("nav-documents").click();
  await page.getByTestId("collection-manuals").waitFor();
  const manualsCard = await page.getByTestId("collection-manuals").innerText();
  check(/7\s*Documents/.test(manualsCard), `the manuals collection shows its 7 documents: ${manualsCard}`);
  await page.getByTestId("documents-table").waitFor();
  check((await page.getByTestId("document-row").count()) === 7, "7 document rows");
  await shot("documents-en");

  step = "add a document and watch it ingest";
  await page.getByTestId("add-documents").click();
  await page.getByTestId("ingest-collection").fill("added");
  await page.getByTestId("ingest-paths").fill(newDoc);
  await page.getByTestId("start-ingest").click();
  const job = page.getByTestId("ingest-job").first();
  await job.waitFor();
  await page.locator('[data-testid="ingest-job"][data-state="done"]').waitFor({ timeout: INGEST_TIMEOUT });
  const status = await job.getByTestId("file-status").first().getAttribute("data-status");
  check(status === "added", `the new file is reported as added (got ${status})`);
  check((await job.getByTestId("ingest-summary").innerText()).includes("1 added"), "the summary counts it");
  await page.getByTestId("collection-added").waitFor();
  check(/1\s*Documents/.test(await page.getByTestId("collection-added").innerText()), "the new collection holds 1 document");
  await page.getByTestId("document-row").first().waitFor();
  check((await page.getByTestId("document-row").first().innerText()).includes("Indexed"), "the document is indexed");
  await shot("documents-ingest-en");

  step = "models screen";
  await page.getByTestId("nav-models").click();
  await page.getByTestId("models-table").waitFor();
  const models = await page.getByTestId("models-table").innerText();
  check(models.includes("qwen2.5-coder-1.5b-instruct"), "the default chat model is listed");
  check(models.includes("multilingual-e5-small"), "the embedding model is listed");
  check(models.includes("cc324af070c2ecbf"), "the sha256 of the default chat model is shown");
  check(models.includes("Apache-2.0"), "licences are shown");
  await shot("models-en");

  step = "training data: import a JSONL file, draft a pair from the manuals, approve it";
  await page.getByTestId("nav-training").click();
  await page.getByTestId("training-screen").waitFor();
  const jsonl = /dataset = "([^"]+)"/.exec(trainJob)?.[1];
  check(!!jsonl, "the training job names its JSONL file");
  await page.getByTestId("import-path").fill(jsonl);
  await page.getByTestId("import-name").fill("ui-faq");
  await page.getByTestId("import-start").click();
  await page.getByTestId("dataset-ui-faq").waitFor();
  check(/\d+ \/ \d+/.test(await page.getByTestId("dataset-ui-faq").innerText()), "the imported dataset shows its split");
  await page.getByTestId("synth-collection").selectOption("manuals");
  await page.getByTestId("synth-name").fill("ui-drafts");
  await page.getByTestId("synth-limit").fill("1");
  await page.getByTestId("synth-start").click();
  const draft = page.getByTestId("draft").first();
  await draft.waitFor({ timeout: ANSWER_TIMEOUT });
  const draftText = await draft.innerText();
  log("draft:", draftText.replace(/\s+/g, " "));
  check(/p\.\d+/.test(draftText) && /Q: \S/.test(draftText) && /A: \S/.test(draftText), "the draft has its source page, question and answer");
  await draft.getByTestId("approve-draft").click();
  await page.locator('[data-testid="draft"][data-status="approved"]').waitFor();
  await page.waitForFunction(
    () => /1 approved/.test(document.querySelector('[data-testid="dataset-ui-drafts"]')?.textContent ?? ""),
  );
  await shot("training-data-en");

  step = "training screen: submit a tiny job and watch it train";
  await page.getByTestId("job-toml").fill(trainJob);
  await page.getByTestId("submit-job").click();
  const trainRow = page.getByTestId("training-job").first();
  await trainRow.waitFor();
  // The runner takes it (running, with a step count), then finishes it.
  await page.locator('[data-testid="training-job"][data-state="done"]').waitFor({ timeout: TRAIN_TIMEOUT });
  const row = await trainRow.innerText();
  log("training job:", row.replace(/\s+/g, " "));
  check(/6 \/ 6/.test(row), "the job shows all its steps done");
  await page.getByTestId("loss-curve").locator("polyline").waitFor();
  const points = (await page.getByTestId("loss-curve").locator("polyline").getAttribute("points")) ?? "";
  check(points.trim().split(" ").length === 6, "the loss curve has a point per step");
  // The finished job's adapter with its base-vs-adapter report and plot.
  const adapter = page.getByTestId("adapter-ui-tiny");
  await adapter.waitFor({ timeout: TRAIN_TIMEOUT });
  await adapter.locator("img.report-plot").waitFor({ timeout: TRAIN_TIMEOUT });
  const adapterText = await adapter.innerText();
  log("adapter:", adapterText.replace(/\s+/g, " "));
  check(/Evaluation: .*Exact match .* → .*Char F1/.test(adapterText.replace(/\s+/g, " ")), "the adapter shows its evaluation");
  check(
    await adapter.locator("img.report-plot").evaluate((img) => img.complete && img.naturalWidth === 1400),
    "the report plot is served and drawn",
  );
  await shot("training-en");
  await page.getByTestId("nav-models").click();
  await page.getByTestId("adapters-table").waitFor();
  check(/ui-tiny[\s\S]*[0-9a-f]{64}/.test(await page.getByTestId("adapters-table").innerText()), "the models screen lists the adapter with its sha256");
  await shot("models-adapters-en");
  await page.getByTestId("nav-training").click();
  await page.getByTestId("training-screen").waitFor();

  step = "Japanese screenshots";
  await page.getByTestId("lang-ja").click();
  await shot("training-ja");
  await page.getByTestId("nav-models").click();
  await page.getByTestId("models-table").waitFor();
  check((await page.getByTestId("models-table").innerText()).includes("インストール済み"), "models screen in Japanese");
  await shot("models-ja");
  await page.getByTestId("nav-documents").click();
  await page.getByTestId("collection-manuals").click();
  await page.getByTestId("documents-table").waitFor();
  check((await page.getByTestId("documents-screen").innerText()).includes("文書とコレクション"), "documents screen in Japanese");
  await shot("documents-ja");

  step = "a question the manuals do not answer, in a second conversation";
  await page.getByTestId("nav-chat").click();
  await page.getByTestId("new-chat").click();
  await page.getByTestId("question").fill("今日の社員食堂の日替わりメニューは何ですか？");
  await page.getByTestId("send").click();
  const refusal = page.getByTestId("refusal");
  await refusal.waitFor({ timeout: ANSWER_TIMEOUT });
  check((await refusal.innerText()).includes("資料に記載が見つかりませんでした"), "the refusal is shown as such");
  const closest = page.getByTestId("answer").last().getByTestId("source-row");
  await closest.first().waitFor();
  check((await closest.count()) >= 1, "the closest sources are listed with the refusal");
  check((await page.getByTestId("citation-chip").count()) === 0, "a refusal cites nothing");
  await shot("chat-refusal-ja");
  await closest.first().click();
  await page.getByTestId("source-panel").getByTestId("highlight").waitFor();
  await page.getByTestId("close-panel").click();
  await page.getByTestId("lang-en").click();
  check((await refusal.innerText()).includes("The documents do not say"), "the refusal in English");
  await shot("chat-refusal-en");
  const convs = page.locator(".conv-item");
  check((await convs.count()) === 2, "both conversations are listed");
  await convs.nth(1).click();
  check(
    (await page.getByTestId("answer").last().innerText()).includes("営業日"),
    "the first conversation is still there",
  );

  step = "no errors in the page";
  check(consoleErrors.length === 0, `no JavaScript errors: ${consoleErrors.join(" | ")}`);
  log("all checks passed");
} catch (e) {
  console.error(`UI test failed at step "${step}": ${e.message}`);
  if (page) await page.screenshot({ path: join(shots, "failure.png") }).catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
