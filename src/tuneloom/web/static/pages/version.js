// One model version (a training run), live: status and code, progress with ETA, the loss chart
// (train and eval loss per step), logs, cancel, delete; once trained, its metrics, a download and an
// evaluation table.
//
// A run may last days and log millions of lines: the page opens on the curve downsampled and the
// log's tail, then listens for what comes after them only, holding a bounded amount (./run_live.js).
import {
  api,
  appPath,
  enc,
  errorBox,
  fill,
  fmtDate,
  fmtDuration,
  fmtNum,
  h,
  link,
  navigate,
  onDelete,
  pageHeader,
  registerPage,
  streamSSE,
  table,
} from "../app.js";
import { FINAL, statusBadge } from "./model.js";
import { liveCurve, liveLog } from "./run_live.js";
import { downloadForm } from "./version_download.js";

const METRIC_LABELS = {
  train_loss: "Train loss",
  eval_loss: "Eval loss",
  perplexity: "Perplexity",
  exact_match: "Exact match",
  tokens_per_second: "Tokens / s",
  train_runtime_s: "Training time (s)",
};

function metricsList(metrics) {
  const entries = Object.entries(metrics || {}).filter(([, v]) => v === null || typeof v !== "object");
  if (!entries.length) return h("p", { className: "muted" }, "No metrics recorded.");
  return h(
    "dl",
    { className: "kv", testid: "metrics" },
    entries.map(([k, v]) => [h("dt", {}, METRIC_LABELS[k] || k.replace(/_/g, " ")), h("dd", {}, fmtNum(v))]),
  );
}

/** What a run was made from: built once, so an open "Settings" stays open while the run reports. */
function detailsView(v, startedCell, attemptsCell) {
  return [
    h(
      "dl",
      { className: "kv" },
      h("dt", {}, "Template"),
      h("dd", {}, v.template),
      h("dt", {}, "Dataset version"),
      h("dd", {}, v.dataset_version_id ? h("code", {}, v.dataset_version_id) : "— (deleted since; this version keeps its weights)"),
      v.resume_from_model ? [h("dt", {}, "Resumed from"), h("dd", {}, h("code", {}, v.resume_from_model))] : null,
      h("dt", {}, "Created"),
      h("dd", {}, fmtDate(v.created_at)),
      h("dt", {}, "Started"),
      startedCell,
      h("dt", {}, "Attempts"),
      attemptsCell,
    ),
    h("details", { testid: "settings-details" }, h("summary", {}, "Settings"), h("pre", { className: "logs", testid: "settings-json" }, JSON.stringify(v.settings, null, 2))),
  ];
}

registerPage("/apps/:app/models/:model/versions/:version", async ({ main, params, signal }) => {
  const base = `${appPath(params.app)}/models/${enc(params.model)}/versions/${enc(params.version)}`;
  const first = await api(base, { signal });

  const statusName = h("strong", { testid: "status-name" });
  const statusCode = h("span", { className: "badge", testid: "status-code" });
  const statusMessage = h("p", { testid: "status-message", className: "muted" });
  const progress = h("progress", { max: 100, value: 0, testid: "train-progress", "aria-label": "Training progress" });
  const progressText = h("p", { testid: "progress-text", "aria-live": "polite" });
  const cancel = h("button", { type: "button", className: "danger", testid: "cancel" }, "Cancel training");
  const again = link(
    `#/apps/${enc(params.app)}/models/new?model=${enc(params.model)}&template=${enc(first.template)}&resume=${enc(params.version)}`,
    "Train again from this version",
    { className: "button", testid: "train-again", hidden: true },
  );
  const actionError = h("div");
  const remove = onDelete(
    h("button", { type: "button", className: "danger", testid: "delete-version" }, "Delete version"),
    `Delete version '${params.version}' of model '${params.model}' with its trained weights and checkpoints?`,
    {
      remove: () => api(base, { method: "DELETE" }),
      done: () => navigate(`/apps/${enc(params.app)}/models/${enc(params.model)}`),
      errorHolder: actionError,
      errorTestid: "delete-version-error",
    },
  );
  const curve = liveCurve(base, signal);
  const log = liveLog(base, `${params.model}-${params.version}.log`, signal);
  const resultBox = h("div");
  const startedCell = h("dd");
  const attemptsCell = h("dd");
  const liveNote = h("p", { className: "muted", testid: "live-note" });

  let state = first;
  let resultsShown = false;
  let cancelRequested = false; // a training run stops within a heartbeat: until then, say so

  function showStatus(v) {
    state = v;
    fill(statusName, statusBadge(v.status));
    fill(statusCode, `code ${v.status.code}`);
    fill(statusMessage, v.status.message || "");
    statusMessage.hidden = !v.status.message;
    const p = v.progress || {};
    const final = FINAL.has(v.status.name);
    const trained = v.status.name === "MODEL_TRAINED";
    const pct = trained ? 100 : p.percent !== null && p.percent !== undefined ? p.percent : null;
    if (pct === null) progress.removeAttribute("value");
    else progress.value = pct;
    const parts = [];
    if (pct !== null) parts.push(`${fmtNum(pct, 3)}%`);
    if (p.step !== null && p.step !== undefined) parts.push(`step ${p.step}${p.total_steps ? ` of ${p.total_steps}` : ""}`);
    if (!final && p.eta_s !== null && p.eta_s !== undefined) parts.push(`about ${fmtDuration(p.eta_s)} left`);
    if (v.status.name === "MODEL_QUEUED_FOR_TRAINING") parts.push(v.queue_position ? `number ${v.queue_position} in the queue` : "waiting for a worker");
    if (final && v.finished_at) parts.push(`finished ${fmtDate(v.finished_at)}`);
    if (cancelRequested && !final) parts.push("cancel requested: the worker stops the run within a few seconds");
    fill(progressText, parts.join(" · ") || "—");
    cancel.hidden = final;
    cancel.disabled = cancelRequested && !final;
    fill(cancel, cancel.disabled ? "Cancelling…" : "Cancel training");
    again.hidden = !trained;
    fill(startedCell, fmtDate(v.started_at));
    fill(attemptsCell, String(v.attempts));
    if (trained && !resultsShown) {
      resultsShown = true;
      showResults(v).catch((err) => resultBox.append(errorBox(err, "evaluation-error")));
    }
  }

  async function showResults(v) {
    const evalBox = h("div", { "aria-live": "polite" }, h("p", { className: "muted", testid: "evaluation-loading" }, "Generating for the held-out examples…"));
    const appHash = `#/apps/${enc(params.app)}`;
    fill(
      resultBox,
      h(
        "section",
        { className: "panel", "aria-labelledby": "results-title" },
        h(
          "div",
          { className: "page-head" },
          h("h2", { id: "results-title" }, "Results"),
          h(
            "div",
            { className: "actions" },
            link(`${appHash}/generate?model=${enc(params.model)}&version=${enc(v.id)}`, "Generate with this version", { className: "button", testid: "generate-link" }),
            link(`${appHash}/compare?model=${enc(params.model)}&versions=${enc(v.id)}`, "Compare", { className: "button secondary", testid: "compare-link" }),
          ),
        ),
        h("h3", {}, "Metrics"),
        metricsList(v.metrics),
        downloadForm(base, signal),
        h("h3", {}, "Evaluation on held-out examples"),
        evalBox,
      ),
    );
    const ev = await api(`${base}/evaluation?limit=20`, { signal });
    fill(
      evalBox,
      ev.rows.length
        ? [
            h(
              "p",
              { testid: "evaluation-accuracy" },
              `${ev.rows.filter((r) => r.match).length} of ${ev.rows.length} generated answers match the expected one exactly (after normalising case, spacing and end punctuation): accuracy ${fmtNum(ev.accuracy * 100, 3)}%.`,
              ev.total > ev.rows.length ? ` The first ${ev.rows.length} of ${ev.total} held-out examples are shown.` : "",
            ),
            table(
              ev.rows,
              [
                { label: "Example", cell: (r) => r.prompt, className: "text" },
                { label: "Expected", cell: (r) => r.expected, className: "text" },
                { label: "Generated", cell: (r) => r.generated, className: "text" },
                {
                  label: "Match",
                  cell: (r) => h("span", { className: `badge ${r.match ? "ok" : "bad"}` }, r.match ? "✓ match" : "✗ no match"),
                },
              ],
              { caption: "Evaluation", testid: "evaluation-table" },
            ),
          ]
        : h("p", { className: "muted", testid: "evaluation-empty" }, "This version has no held-out examples."),
    );
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    fill(actionError);
    try {
      const v = await api(`${base}/cancel`, { method: "POST", signal });
      cancelRequested = true;
      showStatus(v);
    } catch (err) {
      if (err.name === "AbortError") return;
      fill(actionError, errorBox(err, "cancel-error"));
      // 409: the run ended meanwhile (details.status says how); show that instead of a stale "training".
      const ended = err.status === 409 && err.details && err.details.status;
      showStatus(ended ? await api(base, { signal }).catch(() => state) : state);
    }
    if (document.activeElement === document.body) (cancel.hidden || cancel.disabled ? main : cancel).focus();
  });

  main.append(
    pageHeader(`Version ${params.version}`, cancel, again, remove),
    h(
      "section",
      { className: "panel", "aria-labelledby": "status-title" },
      h("h2", { id: "status-title", className: "status-line" }, "Status ", statusName, statusCode),
      statusMessage,
      progress,
      progressText,
      actionError,
    ),
    resultBox,
    h("section", { className: "panel", "aria-labelledby": "chart-title" }, h("h2", { id: "chart-title" }, "Loss"), curve.el, liveNote),
    h("section", { className: "panel", "aria-labelledby": "logs-title" }, h("h2", { id: "logs-title" }, "Logs"), log.el),
    h("section", { className: "panel", "aria-labelledby": "details-title" }, h("h2", { id: "details-title" }, "Details"), detailsView(first, startedCell, attemptsCell)),
  );
  showStatus(first);
  curve.draw();
  await Promise.all([curve.read(), log.read()]);

  // Live: the events stream sends what comes after the curve and the log read above (and after what
  // an earlier connection sent), until a final status.
  for (let attempt = 0; !signal.aborted; attempt++) {
    fill(liveNote, FINAL.has(state.status.name) ? "" : "Live: updates as the worker reports (every few seconds).");
    const after = new URLSearchParams({ after_seq: String(log.lastSeq) });
    if (curve.lastPoint !== null) after.set("after_point", String(curve.lastPoint));
    try {
      await streamSSE(`${base}/events?${after}`, {
        signal,
        onEvent: (name, data) => {
          if (name === "metric") curve.add(data);
          else if (name === "log") log.add(data);
          else if (name === "status") showStatus(data);
        },
      });
    } catch (err) {
      if (signal.aborted || err.name === "AbortError") return;
      if (err.status && err.status < 500) {
        fill(actionError, errorBox(err, "events-error"));
        return;
      }
    }
    if (FINAL.has(state.status.name)) {
      fill(liveNote);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** attempt, 10000)));
  }
});
