/**
 * Generate: a playground for a trained model version.
 *
 * One input → streamed token by token from POST …/models/{id}/generate (server-sent events read with
 * fetch; the Stop button aborts the request, and the server stops generating when the client goes).
 * Several inputs (one per line) → one POST …/models/{id}/predict, results in a table.
 *
 * URL: #/apps/:app/generate?model=ID&version=ID (both optional; version defaults to the latest trained).
 *
 * Stable names for tests (accessible name → data-testid):
 *   label "Model" ("gen-model") · label "Version" ("gen-version", first option "Latest trained", then
 *     newest first) · with more than FILTER_FROM versions, label "Filter versions" ("gen-version-filter")
 *   · label "Inputs" ("gen-inputs", one input per line) · checkbox "Send the whole text as one input" ("gen-one-input")
 *   · parameters: labels "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
 *     "presence_penalty", "frequency_penalty", "num_beams", "do_sample",
 *     "return_full_text", "system_prompt", "stop" (testid "param-<name>")
 *   · button "Generate" ("generate") · button "Stop" ("stop") · status line ("gen-status")
 *   · streamed output ("gen-output", aria-live) · results table ("gen-results": Input, Output, Finish, Tokens)
 *   · error ("gen-error")
 *
 * The parameter fields are ./generate_params.js; the streamed output and results table, ./generate_output.js.
 */
import { api, apiAll, appPath, enc, errorBox, fill, filterBox, fmtDate, h, link, pageHeader, registerPage } from "../app.js";
import { paramFields, readParams } from "./generate_params.js";
import { markStopped, predictTable, streamOutput } from "./generate_output.js";
import { FILTER_FROM, filterOptions, versionText } from "./version_pickers.js";
import { useStyles } from "./playground_styles.js";

const MAX_INPUTS = 128; // the server's limit for one /predict

/** The model's versions, newest first, with the trained ones marked. */
async function trainedVersions(app, model, signal) {
  const versions = await apiAll(`${appPath(app)}/models/${enc(model)}/versions`, { signal });
  return versions.map((v) => ({ ...v, trained: v.status && v.status.name === "MODEL_TRAINED" }));
}

function versionLabel(v) {
  const when = fmtDate(v.finished_at || v.created_at);
  return `${v.id} · ${v.template} · ${v.trained ? when : v.status.name}`;
}

registerPage("/apps/:app/generate", async ({ main, params, query, signal }) => {
  useStyles();
  const app = params.app;
  const models = await api(`${appPath(app)}/models`, { signal });
  main.append(pageHeader("Generate"));
  if (!models.length) {
    main.append(
      h("p", {}, "No models yet. ", link(`#/apps/${enc(app)}/models/new`, "Add a model"), " and train it first."),
    );
    return;
  }

  const modelSelect = h(
    "select",
    { id: "gen-model", testid: "gen-model" },
    models.map((m) => h("option", { value: m.id }, m.id)),
  );
  const versionSelect = h("select", { id: "gen-version", testid: "gen-version" });
  const versionNote = h("p", { className: "field-help", id: "gen-version-help" });
  versionSelect.setAttribute("aria-describedby", "gen-version-help");
  const versionFilter = filterBox("gen-version-filter", "Filter versions", filterVersions);
  let versionTexts = new Map(); // option value → what the filter matches
  const inputs = h("textarea", {
    id: "gen-inputs",
    testid: "gen-inputs",
    rows: 5,
    "aria-describedby": "gen-inputs-help",
    placeholder: "One input per line",
  });
  const oneInput = h("input", { type: "checkbox", id: "gen-one-input", testid: "gen-one-input" });
  const generateButton = h("button", { type: "submit", testid: "generate" }, "Generate");
  const stopButton = h("button", { type: "button", className: "secondary", testid: "stop", disabled: true }, "Stop");
  const status = h("p", { className: "gen-status muted", testid: "gen-status", role: "status" });
  const errorSlot = h("div");
  const output = h("div", { className: "gen-output-wrap" });
  const requestView = h("pre", { className: "request-view" });

  let running = null; // AbortController of the request in flight

  let versionsRequest = 0; // only the latest model choice's versions are shown, whatever order they arrive in
  async function loadVersions() {
    const model = modelSelect.value;
    const mine = ++versionsRequest;
    fill(versionSelect, h("option", { value: "" }, "Loading…"));
    versionSelect.disabled = true;
    const versions = await trainedVersions(app, model, signal);
    if (mine !== versionsRequest) return;
    const trained = versions.filter((v) => v.trained);
    const latest = trained[0];
    fill(
      versionSelect,
      h("option", { value: "" }, latest ? `Latest trained (${latest.id})` : "Latest trained (none yet)"),
      versions.map((v) => h("option", { value: v.id, disabled: !v.trained }, versionLabel(v))),
    );
    versionSelect.disabled = false;
    const wanted = query.get("version");
    if (wanted && trained.some((v) => v.id === wanted) && model === (query.get("model") || model)) {
      versionSelect.value = wanted;
    }
    versionTexts = new Map(versions.map((v) => [v.id, versionText(v)]));
    versionFilter.el.hidden = versions.length <= FILTER_FROM;
    versionFilter.input.value = "";
    fill(versionNote, trainedNote(trained.length));
    generateButton.disabled = !trained.length;
  }

  function trainedNote(count) {
    return count
      ? `${count} trained version${count === 1 ? "" : "s"}, newest first; versions still training or failed cannot be picked.`
      : "No trained version of this model yet: train one on the model's page.";
  }

  function filterVersions(query) {
    const found = filterOptions(versionSelect, versionTexts, query);
    const picked = found.picked ? `: ${found.picked} is picked` : "";
    const trained = [...versionSelect.options].filter((o) => versionTexts.has(o.value) && !o.disabled).length;
    fill(versionNote, query ? `${found.shown} of ${found.of} versions match${picked}.` : trainedNote(trained));
  }

  function setRunning(controller) {
    // Keyboard users keep their place: Generate → Stop while it runs, and back when it ends.
    const hadFocus = document.activeElement === generateButton || document.activeElement === stopButton;
    running = controller;
    generateButton.disabled = Boolean(controller);
    stopButton.disabled = !controller;
    generateButton.setAttribute("aria-busy", controller ? "true" : "false");
    if (hadFocus) (controller ? stopButton : generateButton).focus();
  }

  let inputLines = []; // the line of the Inputs box each sent input came from, to point at it on error

  /** The form field a server error names: a parameter, or the Inputs box (`input`, `inputs`, `inputs.N`). */
  function fieldOf(key) {
    if (/^inputs?(\.\d+)?$/.test(key)) return inputs;
    return form.querySelector(`[name="${key.replace(/^inference_params\./, "")}"]`);
  }

  function showError(err) {
    const index = /^inputs\.(\d+)$/.exec((err && err.key) || "");
    const line = index && inputLines[Number(index[1])];
    fill(errorSlot, errorBox(line ? { message: `${err.message} (line ${line} of Inputs)` } : err, "gen-error"));
    const fields = namedKeys(err).map(fieldOf).filter(Boolean);
    for (const field of fields) field.setAttribute("aria-invalid", "true");
    if (fields.length) fields[0].focus();
  }

  /** The keys a refusal names: each of several refused together (`details.errors`), else its one key. */
  function namedKeys(err) {
    const each = err && err.details && Array.isArray(err.details.errors) ? err.details.errors : [];
    const keys = each.map((one) => one && one.key).filter(Boolean);
    return keys.length ? keys : err && err.key ? [err.key] : [];
  }

  function clearMarks() {
    fill(errorSlot);
    for (const field of form.querySelectorAll('[aria-invalid="true"]')) field.removeAttribute("aria-invalid");
  }

  /** The inputs to send, noting the line each came from (blank lines are skipped). */
  function collectInputs() {
    const text = inputs.value;
    if (oneInput.checked) {
      inputLines = [1];
      return text.trim() ? [text] : [];
    }
    const lines = text.split("\n").map((line, i) => [line, i + 1]).filter(([line]) => line.trim() !== "");
    inputLines = lines.map(([, number]) => number);
    return lines.map(([line]) => line);
  }

  async function run() {
    clearMarks();
    const list = collectInputs();
    if (!list.length) {
      showError({ message: "Type an input first (one per line for several).", key: "input" });
      return;
    }
    if (list.length > MAX_INPUTS) {
      showError({ message: `At most ${MAX_INPUTS} inputs at once; there are ${list.length}.`, key: "inputs" });
      return;
    }
    const model = `${appPath(app)}/models/${enc(modelSelect.value)}`;
    const inference_params = readParams(form);
    const version = versionSelect.value || null;
    const body =
      list.length === 1 ? { input: list[0], version, inference_params } : { inputs: list, version, inference_params };
    requestView.textContent = `POST ${model}/${list.length === 1 ? "generate" : "predict"}\n${JSON.stringify(body, null, 2)}`;
    const controller = new AbortController();
    const onLeave = () => controller.abort();
    signal.addEventListener("abort", onLeave);
    setRunning(controller);
    const into = { signal: controller.signal, output, status };
    try {
      if (list.length === 1) await streamOutput(model, body, into);
      else await predictTable(model, body, into);
    } catch (err) {
      if (err.name === "AbortError") {
        markStopped(output, status);
      } else {
        fill(status, "Failed.");
        showError(err);
      }
    } finally {
      signal.removeEventListener("abort", onLeave);
      setRunning(null);
    }
  }

  stopButton.addEventListener("click", () => running && running.abort());
  modelSelect.addEventListener("change", () => loadVersions().catch(showError));
  inputs.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (!running) form.requestSubmit();
    }
  });

  const form = h(
    "form",
    {
      className: "playground",
      onsubmit: (e) => {
        e.preventDefault();
        if (!running) run();
      },
    },
    h(
      "section",
      { className: "panel" },
      h("h2", {}, "Model"),
      h(
        "div",
        { className: "grid2" },
        h("div", {}, h("label", { for: "gen-model" }, "Model"), modelSelect),
        h("div", {}, h("label", { for: "gen-version" }, "Version"), versionSelect, versionNote, versionFilter.el),
      ),
    ),
    h(
      "section",
      { className: "panel" },
      h("h2", {}, h("label", { for: "gen-inputs", className: "h2-label" }, "Inputs")),
      inputs,
      h(
        "p",
        { className: "field-help", id: "gen-inputs-help" },
        "One input streams its output as it is generated; several (one per line) come back together in a table. Ctrl+Enter generates.",
      ),
      h("label", { for: "gen-one-input", className: "check" }, oneInput, " Send the whole text as one input"),
      h("div", { className: "actions gen-actions" }, generateButton, stopButton),
      status,
      errorSlot,
    ),
    output,
    h(
      "details",
      { className: "panel params-panel", open: window.matchMedia("(min-width: 721px)").matches },
      h("summary", {}, "Inference parameters"),
      h("div", { className: "param-grid" }, paramFields()),
    ),
    h("details", { className: "panel" }, h("summary", {}, "The request"), requestView),
  );

  main.append(form);
  const wantedModel = query.get("model");
  if (wantedModel && models.some((m) => m.id === wantedModel)) modelSelect.value = wantedModel;
  await loadVersions();
  inputs.focus({ preventScroll: true });
});
