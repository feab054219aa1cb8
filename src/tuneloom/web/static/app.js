/**
 * tuneloom web console: hash router and API helper (the DOM helpers are in ./dom.js, re-exported
 * here). No build step, no third-party code.
 *
 * Page modules live in ./pages/*.js, import what they need from this module and call
 * `registerPage(pattern, render)`. PAGE_MODULES below says which module serves which pattern; a
 * module is imported (dynamically) on the first visit to one of its patterns, so each page loads
 * only the shell and its own code. A new page = a module + one line in PAGE_MODULES. A page's `render(ctx)` fills `ctx.main`; `ctx.params` holds
 * the pattern's `:names`, `ctx.query` the hash's query string, `ctx.signal` aborts when the user
 * navigates away (pass it to `api` / `streamSSE` / timers).
 *
 * Routes (hash): #/ sign-in (when no key) · #/apps · #/apps/:app/datasets · #/apps/:app/datasets/:dataset
 *   · #/apps/:app/models · #/apps/:app/models/new · #/apps/:app/models/:model
 *   · #/apps/:app/models/:model/versions/:version · #/apps/:app/generate · #/apps/:app/compare
 *
 * Stable names for tests (accessible name → data-testid):
 *   Sign-in:  label "API key" (input, testid "api-key") · button "Sign in" ("sign-in") · error ("sign-in-error")
 *   Top bar:  button "Sign out" ("sign-out")
 *   Sidebar:  links "Datasets", "Models", "Generate", "Compare" (testid "nav-datasets", "nav-models", …)
 *   Apps:     label "App id" ("app-id") · label "Name" ("app-name") · button "Create app" ("create-app")
 *             · table "Apps" ("apps-table", each row a link named by the app id) · button "Delete <id>" ("delete-app-<id>")
 *   Datasets: label "Dataset id" ("dataset-id") · button "Create dataset" ("create-dataset")
 *             · table ("datasets-table", rows link to the dataset by its id)
 *   Dataset:  label "Choose a file" (file input, "upload-input"), drop zone ("drop-zone")
 *             · upload progress <progress> ("upload-progress") · report ("upload-report"):
 *               counts ("valid-count", "invalid-count"), label "Invalid data tolerance (%)" ("tolerance"),
 *               verdict ("tolerance-verdict", text "Within tolerance" / "Over tolerance"),
 *               table "Invalid rows" ("invalid-rows": Line, Reason, Excerpt)
 *             · link "Download CSV template" ("csv-template") · preview ("preview", each example "example";
 *               prompt part ".prompt" labelled "Prompt — masked from the loss", completion ".completion" labelled "Completion — trained"),
 *               five at a time: "Examples 1–5 of N." ("preview-range"), buttons "Previous", "Next" ("preview-previous", "preview-next")
 *             · button "Create version" ("create-version") · table "Versions" ("versions-table")
 *             · button "Delete dataset" ("delete-dataset") · per version, button "Delete version <id>" ("delete-version-<id>")
 *   Models:   link "Add model" ("add-model") · table ("models-table", rows link by model id)
 *   New model: button "Text Generator (text-to-text)" ("type-text-to-text") · label "Model id" ("model-id")
 *             · label "Dataset" ("dataset") · label "Dataset version" ("dataset-version")
 *             · label "Invalid data tolerance (%)" ("tolerance") · label "Template" ("template"), info ("template-info")
 *             · labels "model_config", "quantization_config", "peft_config", "tokenizer_config", "trainer_config"
 *               (textareas, testid "setting-<name>", each with an error line "setting-<name>-error")
 *             · button "Train" ("train") · form error ("form-error")
 *   Model:    table "Versions" ("model-versions-table", rows link by version id, newest first) · link "Train a new version"
 *             · past ten versions, label "Filter versions" ("versions-filter") and a count ("versions-count")
 *   Version:  status ("status-name", "status-code", "status-message") · <progress> ("train-progress"), "progress-text"
 *             · chart ("loss-chart", an <svg> with a path per series; series "train loss", "eval loss")
 *             · logs ("logs", the newest 1,000 lines), "The last N of M lines." ("logs-note"), button "Download the whole log"
 *               ("download-logs") · details "Settings" ("settings-details") · button "Cancel training" ("cancel") · metrics ("metrics")
 *             · button "Delete version" ("delete-version"); a refused delete shows in "delete-<what>-error"
 *             · table "Evaluation" ("evaluation-table": Example, Expected, Generated, Match)
 *   Generate / Compare: see pages/generate.js and pages/compare.js.
 */

import { enc, errorBox, fill, h, link, pageHeader, toast } from "./dom.js";

export {
  appPath,
  enc,
  errorBox,
  fill,
  filterBox,
  fmtDate,
  fmtDuration,
  fmtNum,
  h,
  link,
  matches,
  onDelete,
  pageHeader,
  streamedText,
  table,
  toast,
  whileBusy,
} from "./dom.js";

const KEY_STORAGE = "tuneloom.apiKey";
const routes = [];
let current = null; // {controller}

export const getKey = () => sessionStorage.getItem(KEY_STORAGE);
export const setKey = (key) => sessionStorage.setItem(KEY_STORAGE, key);
export const clearKey = () => sessionStorage.removeItem(KEY_STORAGE);

/** An API error: `message` is the server's, with `status`, `code`, `key` (the bad setting) and `details`. */
export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && typeof body.message === "string" && body.message) || unexplained(status);
    const key = (body && body.details && body.details.key) || null;
    super(message);
    this.status = status;
    this.code = (body && body.code) || null;
    this.key = key;
    this.details = (body && body.details) || null;
  }
}

/** What to tell the user when an error answer carries no message (a proxy's HTML page, a crash). */
function unexplained(status) {
  if (status === 413) return "The request is larger than the server, or a proxy in front of it, accepts (HTTP 413).";
  if (status >= 500) return `The server failed to answer (HTTP ${status}); its log says why. Try again in a moment.`;
  return `The server refused the request (HTTP ${status}) without saying why.`;
}

export const UNREACHABLE = "The server could not be reached: check that tuneloom serve is running and the network is up, then try again.";

/** fetch, with a network failure said in plain words (the browser's own is "Failed to fetch"). */
export async function request(path, init) {
  try {
    return await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error(UNREACHABLE);
  }
}

function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { Authorization: `Key ${key}`, ...extra } : extra;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401 && getKey()) {
    clearKey();
    setTimeout(() => route(), 0); // back to sign-in, with the reason shown there
    toast("Your key was refused; sign in again.");
  }
  return new ApiError(response.status, body);
}

/** Call the API: `api("/api/apps", {method: "POST", body: {id}})`. JSON in and out; throws ApiError. */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const init = { method, headers: authHeaders(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await request(path, init);
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Every item of a paged list (a model's or a dataset's versions, newest first): a request per page,
 * each following the previous page's `Link: <…>; rel="next"` (the last page has none), so a picker
 * or a filter sees all of them however many pages they take.
 */
export async function apiAll(path, { signal } = {}) {
  const items = [];
  for (let next = path; next; ) {
    const response = await api(next, { signal, raw: true });
    items.push(...(await response.json()));
    next = nextPage(response.headers.get("Link"));
  }
  return items;
}

/** The URL of a Link header's rel="next" (RFC 8288), or null. */
function nextPage(header) {
  const found = /<([^>]*)>\s*;\s*rel="next"/.exec(header || "");
  return found ? found[1] : null;
}

/**
 * Read a server-sent-event stream with fetch (EventSource cannot send the Authorization header).
 * `onEvent(name, data)` gets each event ("message" when unnamed; data JSON-parsed when it parses).
 * Resolves when the stream ends; rejects with ApiError on an error status.
 */
export async function streamSSE(path, { method = "GET", body, signal, onEvent }) {
  const init = { method, headers: authHeaders({ Accept: "text/event-stream" }), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await request(path, init);
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  const dispatch = () => {
    if (data.length) {
      const text = data.join("\n");
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      onEvent(event, parsed);
    }
    event = "message";
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") dispatch();
      else if (line.startsWith(":")) continue;
      else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  }
  dispatch();
}

/**
 * Upload a file with progress (XMLHttpRequest: fetch has no upload progress).
 * Resolves with the parsed JSON answer; rejects with ApiError.
 */
export function upload(path, file, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = getKey();
    if (key) xhr.setRequestHeader("Authorization", `Key ${key}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => onProgress && e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new Error(UNREACHABLE));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(file);
  });
}

/**
 * Which module renders which pattern. Modules load on first visit (so a page costs only its own
 * code); each calls `registerPage` for its patterns. Fixed segments win over `:params`.
 */
const PAGE_MODULES = {
  "/": "signin",
  "/apps": "apps",
  "/apps/:app": "datasets",
  "/apps/:app/datasets": "datasets",
  "/apps/:app/datasets/:dataset": "dataset",
  "/apps/:app/models": "models",
  "/apps/:app/models/new": "model_new",
  "/apps/:app/models/:model": "model",
  "/apps/:app/models/:model/versions/:version": "version",
  "/apps/:app/generate": "generate",
  "/apps/:app/compare": "compare",
};

function entry(pattern) {
  let found = routes.find((r) => r.pattern === pattern);
  if (found) return found;
  const names = [];
  const source = pattern
    .split("/")
    .map((part) => {
      if (!part.startsWith(":")) return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      names.push(part.slice(1));
      return "([^/]+)";
    })
    .join("/");
  found = { pattern, regex: new RegExp(`^${source}/?$`), names, render: null, module: null };
  routes.push(found);
  routes.sort((a, b) => a.names.length - b.names.length); // "/models/new" before "/models/:model"
  return found;
}

/** Register a page: `registerPage("/apps/:app/generate", render)`; registering a pattern again replaces it. */
export function registerPage(pattern, render) {
  entry(pattern).render = render;
}

for (const [pattern, module] of Object.entries(PAGE_MODULES)) entry(pattern).module = module;

export function navigate(path) {
  if (location.hash === `#${path}`) route();
  else location.hash = path;
}

const SECTIONS = [
  ["datasets", "Datasets"],
  ["models", "Models"],
  ["generate", "Generate"],
  ["compare", "Compare"],
];

function renderChrome(path, params) {
  const account = document.getElementById("account");
  fill(
    account,
    getKey()
      ? h(
          "button",
          {
            type: "button",
            className: "link-button",
            testid: "sign-out",
            onclick: () => {
              clearKey();
              navigate("/");
            },
          },
          "Sign out",
        )
      : null,
  );
  const crumbs = document.getElementById("crumbs");
  const parts = [];
  if (getKey()) parts.push(link("#/apps", "Apps"));
  if (params.app) parts.push(link(`#/apps/${enc(params.app)}/datasets`, params.app));
  if (params.model) parts.push(link(`#/apps/${enc(params.app)}/models/${enc(params.model)}`, params.model));
  if (params.dataset) parts.push(h("span", {}, params.dataset));
  fill(crumbs, parts.map((p, i) => [i ? h("span", { className: "sep", "aria-hidden": "true" }, "/") : null, p]));
  const sidebar = document.getElementById("sidebar");
  if (!params.app) {
    sidebar.hidden = true;
    fill(sidebar);
    return;
  }
  sidebar.hidden = false;
  const section = path.split("/")[3] || "datasets";
  fill(
    sidebar,
    h("p", { className: "sidebar-app" }, h("span", { className: "muted" }, "App "), h("strong", {}, params.app)),
    h(
      "ul",
      {},
      SECTIONS.map(([id, label]) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: `#/apps/${enc(params.app)}/${id}`,
              testid: `nav-${id}`,
              "aria-current": section === id ? "page" : null,
            },
            label,
          ),
        ),
      ),
    ),
  );
}

async function route() {
  if (current) current.controller.abort();
  const controller = new AbortController();
  current = { controller };
  const main = document.getElementById("main");
  let [path, queryString = ""] = (location.hash.replace(/^#/, "") || "/").split("?");
  if (!getKey()) path = "/";
  else if (path === "/" || path === "") path = "/apps";
  let match = null;
  for (const r of routes) {
    const m = r.regex.exec(path);
    if (m) {
      const params = {};
      r.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1])));
      match = { r, params };
      break;
    }
  }
  const params = match ? match.params : {};
  renderChrome(path, params);
  fill(main);
  if (match && !match.r.render && match.r.module) {
    try {
      await import(`./pages/${match.r.module}.js`);
    } catch (err) {
      if (!controller.signal.aborted) main.append(errorBox(err, "page-error"));
      return;
    }
    if (controller.signal.aborted) return;
  }
  if (!match || !match.r.render) {
    fill(main, pageHeader("Not found"), h("p", {}, "There is no page here. ", link("#/apps", "Back to the apps.")));
    return;
  }
  try {
    await match.r.render({
      main,
      params,
      query: new URLSearchParams(queryString),
      signal: controller.signal,
      path,
    });
  } catch (err) {
    if (err.name === "AbortError" || controller.signal.aborted) return;
    console.error(err);
    if (!main.querySelector("h1")) main.append(pageHeader(err.status === 404 ? "Not found" : "Something went wrong"));
    main.append(errorBox(err, "page-error"));
  }
}

/** A focusable main for keyboard users after navigation. */
function focusMain() {
  const main = document.getElementById("main");
  if (main && document.activeElement === document.body) main.focus({ preventScroll: true });
}

/** "Skip to content" moves the focus; following its `#main` would route to a page named "main". */
function skipToMain(e) {
  e.preventDefault();
  document.getElementById("main").focus();
}

document.querySelector(".skip").addEventListener("click", skipToMain);
window.addEventListener("hashchange", () => route().then(focusMain));
route();
