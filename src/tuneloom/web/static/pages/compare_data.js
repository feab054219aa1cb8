/**
 * What the Compare page shows, worked out from the API's answers (no DOM): every version of the
 * app's models, which of them to pick first, their settings flattened and diffed, each metric's best
 * value, and their loss curves as chart series. `tuneloom compare` (tuneloom.evaluate.compare)
 * follows the same rules for settings and best values.
 */
import { CHART_POINTS, PALETTE } from "../chart.js";
import { api, apiAll, appPath, enc } from "../app.js";

const SETTINGS = ["model_config", "quantization_config", "peft_config", "tokenizer_config", "trainer_config"];

/** Metric rows: [key, label, better ("low" | "high" | null), format]. */
const METRICS = [
  ["train_loss", "train loss", "low"],
  ["eval_loss", "eval loss", "low"],
  ["perplexity", "perplexity", "low"],
  ["train_runtime_s", "runtime (s)", "low"],
  ["train_tokens_per_second", "tokens/s", "high"],
  ["steps", "steps", null],
  ["epochs", "epochs", null],
];

export const TRAINED = "MODEL_TRAINED";
export const vkey = (v) => `${v.model_id}/${v.id}`;
export const shortName = (v) => `${v.model_id} · ${v.id.slice(0, 8)}`;

/** {a: {b: 1, c: [1, 2]}} → {"a.b": "1", "a.c": "[1,2]"}; empty objects stay visible as "{}". */
export function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (!keys.length && prefix) out[prefix] = "{}";
    for (const key of keys.sort()) flatten(value[key], prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out[prefix] = value === undefined ? "—" : JSON.stringify(value);
  }
  return out;
}

/** The settings of each version flattened, and the union of their keys in a stable order. */
export function settingsRows(versions) {
  const flat = versions.map((v) => {
    const s = v.settings || {};
    const row = {
      template: JSON.stringify(v.template),
      dataset_version_id: JSON.stringify(v.dataset_version_id),
    };
    if (s.invalid_data_tolerance_percent !== undefined) {
      row.invalid_data_tolerance_percent = JSON.stringify(s.invalid_data_tolerance_percent);
    }
    for (const name of SETTINGS) flatten(s[name] === undefined ? {} : s[name], name, row);
    return row;
  });
  const keys = [];
  for (const row of flat) for (const key of Object.keys(row)) if (!keys.includes(key)) keys.push(key);
  return keys.map((key) => {
    const values = flat.map((row) => (key in row ? row[key] : "—"));
    return { key, values, differs: new Set(values).size > 1 };
  });
}

/**
 * A row per metric: its label, each version's value and the best of them — null without a direction
 * or with fewer than two distinct numbers; every value equal to it is best.
 */
export function metricRows(versions) {
  return METRICS.map(([key, label, better]) => {
    const values = versions.map((v) => (v.metrics ? v.metrics[key] : undefined));
    const numbers = values.filter((x) => typeof x === "number" && Number.isFinite(x));
    const best =
      better && new Set(numbers).size > 1 ? (better === "low" ? Math.min(...numbers) : Math.max(...numbers)) : null;
    return { label, values, best };
  });
}

/** Every model of `app` with its versions (newest first), and all those versions tagged with `model_id`. */
export async function appVersions(app, signal) {
  const models = await api(`${appPath(app)}/models`, { signal });
  const perModel = await Promise.all(
    models.map((m) => apiAll(`${appPath(app)}/models/${enc(m.id)}/versions`, { signal }).then((vs) => [m, vs])),
  );
  const all = perModel.flatMap(([m, vs]) => vs.map((v) => ({ ...v, model_id: m.id })));
  return { perModel, all };
}

/**
 * What to show first: the URL's choice, else the two newest trained versions (else the two newest).
 * An entry is MODEL/VERSION or a bare version id (ids are unique across models); with fewer than two,
 * the newest trained versions fill up, those of the first chosen version's model (or ?model=) first.
 * Returns the set of "model/version" keys.
 */
export function firstChoice(all, query) {
  const wanted = (query.get("versions") || "").split(",").filter(Boolean);
  const chosen = new Set();
  for (const entry of wanted) {
    const found = all.find((v) => vkey(v) === entry || v.id === entry);
    if (found) chosen.add(vkey(found));
  }
  if (chosen.size < 2) {
    const first = all.find((v) => chosen.has(vkey(v)));
    const model = first ? first.model_id : query.get("model");
    const byNewest = [...all].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    const trained = byNewest.filter((v) => v.status.name === TRAINED);
    const order = [
      ...trained.filter((v) => v.model_id === model),
      ...trained,
      ...byNewest.filter((v) => v.model_id === model),
      ...byNewest,
    ];
    for (const v of order) {
      if (chosen.size >= 2) break;
      chosen.add(vkey(v));
    }
  }
  return chosen;
}

/** The colour of `v` on the chart and in the tables: by its place among `selected`. */
export function colorOf(selected, v) {
  return PALETTE[selected.indexOf(v) % PALETTE.length];
}

/**
 * `metricsOf(v)`: a version's loss points, downsampled to CHART_POINTS per series, read once per
 * page (a failed read is tried again next time).
 */
export function metricsReader(app, signal) {
  const cache = new Map(); // version key → promise of metric points
  return function metricsOf(v) {
    const key = vkey(v);
    if (!cache.has(key)) {
      const url = `${appPath(app)}/models/${enc(v.model_id)}/versions/${enc(v.id)}/metrics?max_points=${CHART_POINTS}`;
      cache.set(
        key,
        api(url, { signal }).catch((err) => {
          cache.delete(key);
          throw err;
        }),
      );
    }
    return cache.get(key);
  };
}

/** The chart's series for `drawn` (points[i] are drawn[i]'s): train loss solid, eval loss dashed, one colour each. */
export function lossSeries(drawn, points) {
  const series = [];
  drawn.forEach((v, i) => {
    const color = colorOf(drawn, v);
    const rows = points[i] || [];
    const train = rows.filter((p) => typeof p.loss === "number").map((p) => [p.step, p.loss]);
    const evalPts = rows.filter((p) => typeof p.eval_loss === "number").map((p) => [p.step, p.eval_loss]);
    // One legend entry per version (its colour); solid and dashed are said in the chart's title.
    series.push({ name: `${shortName(v)} train`, label: shortName(v), points: train, color });
    if (evalPts.length) series.push({ name: `${shortName(v)} eval`, points: evalPts, color, dash: true, dots: true, legend: false });
  });
  return series;
}
