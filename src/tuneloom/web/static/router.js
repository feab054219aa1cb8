/**
 * The console's hash router: which page module renders which `#/…` pattern, loading that module on
 * the first visit, and running its `render(ctx)` with an AbortSignal that fires when the user
 * navigates away. Without a key every path is the sign-in page. The top bar and sidebar are drawn
 * by the `renderChrome` that `startRouter` is given (./chrome.js), before each page.
 */

import { getKey, onKeyRefused } from "./api.js";
import { errorBox, fill, h, link, pageHeader } from "./dom.js";

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

const routes = [];
let current = null; // {controller}
let renderChrome = () => {};

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

/**
 * Route the current hash now and on every change, drawing `chrome(path, params)` first; a refused
 * key (cleared by the API layer) routes again, to the sign-in page.
 */
export function startRouter(chrome) {
  renderChrome = chrome;
  onKeyRefused(route);
  window.addEventListener("hashchange", () => route().then(focusMain));
  route();
}
