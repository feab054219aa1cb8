/**
 * The console's chrome around every page: the top bar (breadcrumbs and "Sign out") and, inside an
 * app, the sidebar of its sections; and the "Skip to content" link. Drawn by the router before
 * each page (./router.js), from the path and its params.
 */

import { clearKey, getKey } from "./api.js";
import { enc, fill, h, link } from "./dom.js";
import { navigate } from "./router.js";

const SECTIONS = [
  ["datasets", "Datasets"],
  ["models", "Models"],
  ["generate", "Generate"],
  ["compare", "Compare"],
];

/** The top bar (breadcrumbs, Sign out) and, inside an app, the sidebar with the current section marked. */
export function renderChrome(path, params) {
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

/** "Skip to content" moves the focus; following its `#main` would route to a page named "main". */
function skipToMain(e) {
  e.preventDefault();
  document.getElementById("main").focus();
}

export function wireSkipLink() {
  document.querySelector(".skip").addEventListener("click", skipToMain);
}
