/**
 * Picking among many model versions (a model trained sixty times): what a filter matches, the
 * Generate page's version <select> narrowed as the user types, the Compare page's checkboxes.
 * Versions come newest first, as the API lists them; with more than FILTER_FROM of them, the pages
 * show a filter box ("Filter versions": id, status, template or date, every word must match).
 */
import { fmtDate, h, matches } from "../app.js";

export const FILTER_FROM = 10;

/** What a version filter matches: its id, status, template and dates as the pages show them. */
export function versionText(v) {
  return [v.id, v.status.name, v.template, fmtDate(v.created_at), fmtDate(v.finished_at)].join(" ");
}

/**
 * Hide the options of `select` whose version (`texts`: option value → versionText) does not match
 * `query`; the selected one stays, and the only pickable match is selected. Returns the counts.
 */
export function filterOptions(select, texts, query) {
  const options = [...select.options].filter((o) => texts.has(o.value));
  const shown = options.filter((o) => matches(texts.get(o.value), query));
  const pickable = shown.filter((o) => !o.disabled);
  const picked = query && pickable.length === 1 ? pickable[0].value : null;
  if (picked) select.value = picked;
  for (const o of options) o.hidden = !shown.includes(o) && !o.selected;
  return { shown: shown.length, of: options.length, picked };
}

/**
 * Checkboxes for versions of several models (`perModel`: [[model, versions]]), checked where
 * `chosen` has "model/version"; `onChange(key, checked)` on a click. `filter(query)` hides the
 * unchecked ones that do not match (a checked one stays, to be unchecked) and returns how many show.
 */
export function versionChecklist(perModel, chosen, onChange) {
  const groups = perModel.map(([m, vs]) => {
    const items = vs.map((v) => {
      const key = `${m.id}/${v.id}`;
      const id = `pick-${v.id}`;
      const box = h("input", { type: "checkbox", id, testid: id, value: key, checked: chosen.has(key) });
      box.addEventListener("change", () => onChange(key, box.checked));
      const state = v.status.name === "MODEL_TRAINED" ? "trained" : v.status.name;
      const detail = h("span", { className: "muted" }, `${v.template} · ${state} · ${fmtDate(v.created_at)}`);
      const li = h("li", {}, h("label", { for: id }, box, h("span", {}, h("code", {}, v.id), " ", detail)));
      return { li, box, text: `${m.id} ${versionText(v)}` };
    });
    const heading = h("p", { className: "pick-model" }, m.id);
    return { heading, items, el: items.length ? [heading, h("ul", { className: "pick-list" }, items.map((i) => i.li))] : null };
  });

  function filter(query) {
    let shown = 0;
    for (const group of groups) {
      for (const item of group.items) {
        item.li.hidden = !item.box.checked && !matches(item.text, query);
        if (!item.li.hidden) shown += 1;
      }
      group.heading.hidden = group.items.every((item) => item.li.hidden);
    }
    return shown;
  }

  return { el: h("div", { className: "pick-scroll" }, groups.map((g) => g.el)), filter };
}
