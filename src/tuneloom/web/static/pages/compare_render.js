/**
 * The Compare page's tables and output boxes for the picked versions (`selected`, in the order and
 * colours of the chart): settings with their differences highlighted, metrics with the best marked,
 * and a box per version for "Generate with each". Built from ./compare_data.js; no API calls.
 */
import { enc, fmtNum, h, link } from "../app.js";
import { colorOf, metricRows, settingsRows, shortName, TRAINED } from "./compare_data.js";

const swatch = (selected, v) => h("span", { className: "cmp-swatch", style: { background: colorOf(selected, v) } });

/** The column headers: a colour swatch and a link to each version's page. */
function versionHeaders(app, selected) {
  return selected.map((v) =>
    h(
      "th",
      { scope: "col", title: `${v.model_id}/${v.id}` },
      swatch(selected, v),
      link(`#/apps/${enc(app)}/models/${enc(v.model_id)}/versions/${enc(v.id)}`, shortName(v)),
    ),
  );
}

/** How many settings differ, then the table of them ("compare-settings"), only those that differ if `onlyDiffs`. */
export function settingsTable(app, selected, onlyDiffs) {
  const rows = settingsRows(selected);
  const differing = rows.filter((r) => r.differs).length;
  const shown = onlyDiffs ? rows.filter((r) => r.differs) : rows;
  return [
    h(
      "p",
      { className: "muted", testid: "settings-summary" },
      `${differing} of ${rows.length} settings differ${differing ? " (highlighted)" : ""}.`,
    ),
    h(
      "div",
      { className: "table-wrap cmp-wrap" },
      h(
        "table",
        { testid: "compare-settings" },
        h("caption", {}, "Settings"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Setting"), versionHeaders(app, selected))),
        h(
          "tbody",
          {},
          shown.map((r) =>
            h(
              "tr",
              { className: r.differs ? "differs" : null },
              h("th", { scope: "row" }, r.key),
              r.values.map((value) =>
                h("td", { className: r.differs ? "diff" : null, "aria-label": r.differs ? `${value} (differs)` : null }, value),
              ),
            ),
          ),
        ),
      ),
    ),
  ];
}

/** The status and metrics of each version ("compare-metrics"), each metric's best in green. */
export function metricsTable(app, selected) {
  return h(
    "div",
    { className: "table-wrap cmp-wrap" },
    h(
      "table",
      { testid: "compare-metrics" },
      h("caption", {}, "Metrics (best in green)"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), versionHeaders(app, selected))),
      h(
        "tbody",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "row" }, "status"),
          selected.map((v) => h("td", {}, v.status.name)),
        ),
        metricRows(selected).map(({ label, values, best }) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, label),
            values.map((x) =>
              h(
                "td",
                { className: best !== null && x === best ? "num best" : "num" },
                fmtNum(x),
                best !== null && x === best ? h("span", { className: "visually-hidden" }, " (best)") : null,
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

/** A box per version ("compare-output-<id>") for its generated text; an untrained one says why it has none. */
export function outputBoxes(selected) {
  return selected.map((v) =>
    h(
      "section",
      { className: "cmp-output", testid: `compare-output-${v.id}`, "aria-label": `Output of ${shortName(v)}` },
      h("h3", {}, swatch(selected, v), shortName(v)),
      h(
        "pre",
        { className: "muted" },
        v.status.name === TRAINED ? "—" : `Not trained (${v.status.name}): nothing to generate.`,
      ),
    ),
  );
}
