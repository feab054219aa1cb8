/**
 * The console's DOM helpers: build elements (`h`), replace children (`fill`), show errors, tables,
 * page headers, numbers and dates. No API calls and no routing; app.js re-exports all of it, so a
 * page imports everything from "../app.js".
 */

/** Create an element: h("button", {type: "button", onclick, dataset: {testid: "x"}}, "Text", child…). */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (name === "testid") el.setAttribute("data-testid", value);
    else if (!svg && name in el && typeof value !== "string" && name !== "list") el[name] = value;
    else if (!svg && (name === "value" || name === "checked" || name === "disabled")) el[name] = value;
    else el.setAttribute(name === "className" ? "class" : name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message box for an error (role=alert) — empty when `err` is null. */
export function errorBox(err, testid = "error") {
  if (!err) return h("div", { testid, hidden: true });
  const text = err.key && !String(err.message).includes(err.key) ? `${err.message} (key '${err.key}')` : err.message;
  return h("div", { className: "error", role: "alert", testid }, text);
}

export function toast(text) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = text;
  box.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("show"), 4000);
}

export const enc = encodeURIComponent;
export const appPath = (app) => `/api/apps/${enc(app)}`;

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function fmtNum(x, digits = 4) {
  if (x === null || x === undefined || x === "") return "—";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return x.toLocaleString();
  return Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x.toPrecision(digits)).toString();
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** A simple table: columns [{label, cell: (row) => node|string, className?}]. */
export function table(rows, columns, { caption, testid, empty = "Nothing here yet." } = {}) {
  if (!rows.length) return h("p", { className: "muted", testid: testid && `${testid}-empty` }, empty);
  return h(
    "div",
    { className: "table-wrap" },
    h(
      "table",
      { testid },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", className: c.className }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((row) => h("tr", {}, columns.map((c) => h("td", { className: c.className }, c.cell(row))))),
      ),
    ),
  );
}

/**
 * Text that arrives in pieces (a streamed generation, hundreds a second) shown in `box` once a
 * frame: appended to one text node before `before`, the box kept scrolled to its end unless the
 * reader scrolled up, then `onShown(pieces so far)`. `flush()` shows what is pending at once (when
 * the stream ends, finished or not).
 */
export function streamedText(box, before, onShown) {
  const text = document.createTextNode("");
  box.insertBefore(text, before);
  let pending = "";
  let pieces = 0;
  let frame = null;
  function flush() {
    if (frame) cancelAnimationFrame(frame);
    frame = null;
    if (!pending) return;
    const following = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    text.appendData(pending);
    pending = "";
    onShown(pieces);
    if (following) box.scrollTop = box.scrollHeight;
  }
  function add(piece) {
    pending += piece;
    pieces += 1;
    if (!frame) frame = requestAnimationFrame(flush);
  }
  return { add, flush };
}

/** Whether `text` holds every word of `query`, ignoring case: how the console's filter boxes match. */
export function matches(text, query) {
  const haystack = String(text).toLowerCase();
  return query.toLowerCase().split(/\s+/).every((word) => haystack.includes(word));
}

/**
 * A filter box for a long list (a model's versions): `onFilter(query)` runs as the user types.
 * Returns {el, input}; the input is a labelled search field with the testid `id`.
 */
export function filterBox(id, label, onFilter) {
  const input = h("input", { type: "search", id, testid: id, autocomplete: "off", placeholder: "id, template, status or date" });
  input.addEventListener("input", () => onFilter(input.value.trim()));
  return { el: h("div", { className: "filter" }, h("label", { for: id }, label), input), input };
}

export function link(href, text, attrs = {}) {
  return h("a", { href, ...attrs }, text);
}

export function pageHeader(title, ...actions) {
  document.title = `${title} · tuneloom`;
  return h("div", { className: "page-head" }, h("h1", {}, title), actions.length ? h("div", { className: "actions" }, actions) : null);
}

/**
 * Run `work` with `button` disabled, so a second click or Enter cannot send the request twice.
 * Disabling a focused button drops the keyboard focus to the page, so it goes back to the button.
 */
export async function whileBusy(button, work) {
  const hadFocus = document.activeElement === button;
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
    if (hadFocus && button.isConnected && document.activeElement === document.body) button.focus();
  }
}

/**
 * Make `button` delete something: confirm(`question`) — naming what goes — then `remove()` with the
 * button busy (whileBusy), then `done()` (back to the parent list). A refusal, such as a 409 naming
 * the run that still uses it, is shown in `errorHolder` under `errorTestid`, and nothing moves.
 */
export function onDelete(button, question, { remove, done, errorHolder, errorTestid }) {
  button.addEventListener("click", () => {
    if (!confirm(question)) return;
    fill(errorHolder);
    whileBusy(button, async () => {
      try {
        await remove();
        await done();
      } catch (err) {
        fill(errorHolder, errorBox(err, errorTestid));
      }
    });
  });
  return button;
}
