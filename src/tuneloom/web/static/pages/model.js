// One model: its versions (training runs), newest first, with status, code, dates and a metrics
// summary; past FILTER_FROM versions a filter box narrows them (by id, status, template or date).
import { api, apiAll, appPath, enc, fill, filterBox, fmtDate, fmtNum, h, link, matches, onDelete, pageHeader, registerPage, table, navigate } from "../app.js";
import { FILTER_FROM, versionText } from "./version_pickers.js";

export const FINAL = new Set([
  "MODEL_TRAINED",
  "MODEL_TRAINING_FAILED",
  "MODEL_TRAINING_INVALID_PARAMS",
  "MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED",
  "MODEL_TRAINING_CANCELLED",
]);

export function statusBadge(status) {
  const name = status.name;
  const kind = name === "MODEL_TRAINED" ? "ok" : FINAL.has(name) ? (name === "MODEL_TRAINING_CANCELLED" ? "warn" : "bad") : "run";
  return h("span", { className: `badge ${kind}`, testid: "status-badge" }, name);
}

export function metricsSummary(m) {
  if (!m) return "—";
  const parts = [];
  if (m.train_loss !== undefined) parts.push(`train loss ${fmtNum(m.train_loss)}`);
  if (m.eval_loss !== undefined) parts.push(`eval loss ${fmtNum(m.eval_loss)}`);
  if (m.perplexity !== undefined) parts.push(`perplexity ${fmtNum(m.perplexity)}`);
  if (m.exact_match !== undefined) parts.push(`exact match ${fmtNum(m.exact_match)}`);
  return parts.join(" · ") || "—";
}

registerPage("/apps/:app/models/:model", async ({ main, params, signal }) => {
  const base = `${appPath(params.app)}/models/${enc(params.model)}`;
  const list = h("div");
  const model = await api(base, { signal });
  const removeError = h("div");
  const remove = onDelete(
    h("button", { type: "button", className: "danger", testid: "delete-model" }, "Delete model"),
    `Delete model '${model.id}' and all its versions?`,
    {
      remove: () => api(base, { method: "DELETE" }),
      done: () => navigate(`/apps/${enc(params.app)}/models`),
      errorHolder: removeError,
      errorTestid: "delete-model-error",
    },
  );
  let versions = [];
  let query = "";
  const filter = filterBox("versions-filter", "Filter versions", (q) => ((query = q), render()));
  const count = h("p", { className: "muted", testid: "versions-count", "aria-live": "polite" });
  main.append(
    pageHeader(
      `Model ${model.id}`,
      link(`#/apps/${enc(params.app)}/models/new?model=${enc(model.id)}`, "Train a new version", { className: "button", testid: "train-new-version" }),
      remove,
    ),
    removeError,
    h("p", { className: "muted" }, `Text Generator (${model.model_type_id}), created ${fmtDate(model.created_at)}.`),
    filter.el,
    count,
    list,
  );
  function render() {
    const shown = versions.filter((v) => matches(versionText(v), query));
    filter.el.hidden = count.hidden = versions.length <= FILTER_FROM;
    fill(count, query ? `${shown.length} of ${versions.length} versions match.` : `${versions.length} versions, newest first.`);
    fill(
      list,
      table(
        shown,
        [
          { label: "Version", cell: (v) => link(`#/apps/${enc(params.app)}/models/${enc(params.model)}/versions/${enc(v.id)}`, v.id) },
          { label: "Status", cell: (v) => statusBadge(v.status) },
          { label: "Code", cell: (v) => String(v.status.code), className: "num" },
          { label: "Template", cell: (v) => v.template },
          { label: "Progress", cell: (v) => (v.progress && v.progress.percent !== null ? `${fmtNum(v.progress.percent, 3)}%` : "—"), className: "num" },
          { label: "Created", cell: (v) => fmtDate(v.created_at) },
          { label: "Metrics", cell: (v) => metricsSummary(v.metrics) },
        ],
        { caption: "Versions", testid: "model-versions-table", empty: query ? "No version matches the filter." : "No versions yet: train one." },
      ),
    );
  }
  async function load() {
    versions = await apiAll(`${base}/versions`, { signal });
    render();
    if (versions.some((v) => !FINAL.has(v.status.name))) setTimeout(() => signal.aborted || load().catch(() => {}), 2000);
  }
  await load();
});
