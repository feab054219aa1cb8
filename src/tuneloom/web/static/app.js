/**
 * tuneloom web console: the entry module (index.html loads it) and the one module pages import
 * from. No build step, no third-party code. It re-exports the DOM helpers (./dom.js), the API layer
 * (./api.js) and the router's `registerPage` / `navigate` (./router.js), then starts the router
 * with the chrome (./chrome.js) drawn before each page.
 *
 * Page modules live in ./pages/*.js, import what they need from this module and call
 * `registerPage(pattern, render)`. PAGE_MODULES in ./router.js says which module serves which
 * pattern; a module is imported (dynamically) on the first visit to one of its patterns, so each page
 * loads only the shell and its own code. A new page = a module + one line in PAGE_MODULES. A page's
 * `render(ctx)` fills `ctx.main`; `ctx.params` holds the pattern's `:names`, `ctx.query` the hash's
 * query string, `ctx.signal` aborts when the user navigates away (pass it to `api` / `streamSSE` /
 * timers).
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

import { renderChrome, wireSkipLink } from "./chrome.js";
import { startRouter } from "./router.js";

export { ApiError, api, apiAll, clearKey, getKey, request, setKey, streamSSE, UNREACHABLE, upload } from "./api.js";
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
export { navigate, registerPage } from "./router.js";

wireSkipLink();
startRouter(renderChrome);
