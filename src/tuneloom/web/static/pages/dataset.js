// One dataset: upload (drag-and-drop or file picker, with progress), the validation report,
// a preview of the examples (prompt masked from the loss vs completion trained), versions; deletes.
import {
  api,
  apiAll,
  appPath,
  enc,
  errorBox,
  fill,
  fmtDate,
  fmtNum,
  h,
  navigate,
  onDelete,
  pageHeader,
  registerPage,
  table,
  toast,
  upload,
  whileBusy,
} from "../app.js";

const DEFAULT_TOLERANCE = 5;
const PREVIEW = 5;
const lastReports = new Map(); // "app/dataset" → the last upload's report, while this tab lives

function reportView(report, toleranceHolder) {
  const tolerance = h("input", {
    id: "tolerance",
    type: "number",
    min: 0,
    max: 100,
    step: "any",
    value: String(toleranceHolder.value),
    testid: "tolerance",
    "aria-describedby": "tolerance-verdict",
  });
  const verdict = h("p", { id: "tolerance-verdict", testid: "tolerance-verdict", "aria-live": "polite" });
  const update = () => {
    const limit = Number(tolerance.value);
    toleranceHolder.value = Number.isFinite(limit) ? limit : DEFAULT_TOLERANCE;
    const within = report.invalid_percent <= toleranceHolder.value;
    fill(
      verdict,
      h("span", { className: `badge ${within ? "ok" : "bad"}` }, within ? "Within tolerance" : "Over tolerance"),
      ` ${fmtNum(report.invalid_percent, 3)}% of the rows are invalid; training allows up to ${fmtNum(toleranceHolder.value)}%.`,
    );
  };
  tolerance.addEventListener("input", update);
  update();
  return h(
    "section",
    { className: "panel", testid: "upload-report", "aria-labelledby": "report-title" },
    h("h2", { id: "report-title" }, `Validation report — ${report.source_file}`),
    h(
      "div",
      { className: "stats" },
      h("div", { className: "stat" }, h("strong", { testid: "valid-count" }, fmtNum(report.valid_rows)), "valid rows"),
      h("div", { className: "stat" }, h("strong", { testid: "invalid-count" }, fmtNum(report.invalid_rows)), "invalid rows"),
      h("div", { className: "stat" }, h("strong", {}, fmtNum(report.total_rows)), "rows read"),
      h("div", { className: "stat" }, h("strong", {}, report.format), "format"),
    ),
    h("div", { className: "inline-form" }, h("div", {}, h("label", { for: "tolerance" }, "Invalid data tolerance (%)"), tolerance)),
    verdict,
    report.invalid.length
      ? table(
          report.invalid,
          [
            { label: "Line", cell: (r) => String(r.line), className: "num" },
            { label: "Reason", cell: (r) => r.reason, className: "text" },
            { label: "Excerpt", cell: (r) => h("code", {}, r.excerpt || ""), className: "text" },
          ],
          { caption: "Invalid rows", testid: "invalid-rows" },
        )
      : h("p", { testid: "invalid-rows-empty" }, "Every row is valid."),
  );
}

function exampleView(item) {
  return h(
    "article",
    { className: "example", testid: "example", "aria-label": `Example from line ${item.line}` },
    h(
      "div",
      { className: "part prompt" },
      h("span", { className: "tag" }, "Prompt — masked from the loss"),
      h("span", { className: "text" }, item.prompt),
    ),
    h(
      "div",
      { className: "part completion" },
      h("span", { className: "tag" }, "Completion — trained"),
      h("span", { className: "text" }, item.completion),
    ),
  );
}

function toastError(err) {
  if (err.name !== "AbortError") toast(err.message);
}

function stateBadge(state) {
  const kind = state === "READY" ? "ok" : state === "FAILURE" ? "bad" : "run";
  return h("span", { className: `badge ${kind}` }, state);
}

function range(r) {
  return r ? `${fmtNum(r.min)} / ${fmtNum(r.mean)} / ${fmtNum(r.max)}` : "—";
}

/** `err` with the refused file named, when its message does not say which (a size limit, a lost connection). */
function naming(file, err) {
  if (String(err.message).includes(file.name)) return err;
  const why = String(err.message).replace(/^The /, "the ");
  return { message: `'${file.name}' was not uploaded: ${why}`, key: err.key };
}

async function downloadTemplate(e) {
  e.preventDefault();
  try {
    const response = await api("/api/csv-template", { raw: true });
    const url = URL.createObjectURL(await response.blob());
    const a = h("a", { href: url, download: "tuneloom-template.csv", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    toast(err.message);
  }
}

registerPage("/apps/:app/datasets/:dataset", async ({ main, params, signal }) => {
  const base = `${appPath(params.app)}/datasets/${enc(params.dataset)}`;
  const reportKey = `${params.app}/${params.dataset}`;
  const tolerance = { value: DEFAULT_TOLERANCE };
  await api(base, { signal }); // 404 → the page says so

  const reportBox = h("div");
  const previewBox = h("div", { testid: "preview" });
  const versionsBox = h("div");
  const uploadError = h("div");
  const progress = h("progress", { max: 100, value: 0, testid: "upload-progress", "aria-label": "Upload progress", hidden: true });
  const progressText = h("p", { className: "muted", "aria-live": "polite", testid: "upload-progress-text" });
  const fileInput = h("input", {
    id: "upload-input",
    type: "file",
    accept: ".csv,.txt,.jsonl,.json,text/csv,text/plain,application/jsonl",
    testid: "upload-input",
  });

  // One upload at a time: every upload adds its rows to the dataset, so a second drop or choice
  // while one is in flight (a double drop, an impatient re-pick) would add the rows twice.
  let uploading = null; // the file in flight

  function setUploading(file) {
    uploading = file;
    fileInput.disabled = Boolean(file);
    drop.setAttribute("aria-busy", file ? "true" : "false");
  }

  async function send(file) {
    if (!file) return;
    if (uploading) {
      toast(`'${uploading.name}' is still uploading: add the next file when it is done.`);
      return;
    }
    setUploading(file);
    fill(uploadError);
    progress.hidden = false;
    progress.value = 0;
    fill(progressText, `Uploading ${file.name}…`);
    try {
      const report = await upload(`${base}/uploads?filename=${enc(file.name)}&format=auto`, file, {
        signal,
        onProgress: (loaded, total) => {
          const pct = total ? Math.round((loaded / total) * 100) : 0;
          progress.value = pct;
          fill(progressText, `Uploading ${file.name}: ${pct}% (${fmtNum(loaded)} of ${fmtNum(total)} bytes)`);
        },
      });
      progress.value = 100;
      fill(progressText, `Uploaded ${file.name}: ${report.valid_rows} valid, ${report.invalid_rows} invalid rows.`);
      lastReports.set(reportKey, report);
      fill(reportBox, reportView(report, tolerance));
      await loadPreview();
    } catch (err) {
      if (err.name === "AbortError") return;
      progress.hidden = true;
      fill(progressText);
      fill(uploadError, errorBox(naming(file, err), "upload-error"));
    } finally {
      fileInput.value = "";
      setUploading(null);
    }
  }

  fileInput.addEventListener("change", () => send(fileInput.files[0]));
  const drop = h(
    "div",
    { className: "dropzone", testid: "drop-zone" },
    h("p", { id: "drop-help" }, h("strong", {}, "Drop a file here"), " or choose one: CSV template, sectioned TXT, or JSONL."),
    h("label", { for: "upload-input" }, "Choose a file"),
    fileInput,
  );
  fileInput.setAttribute("aria-describedby", "drop-help");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) send(file);
  });

  // The preview pages through the inputs PREVIEW at a time (a dataset may hold millions): `pages`
  // holds the `after` cursor of each page up to the one shown, so Previous steps back one.
  const previewRange = h("span", { testid: "preview-range" });
  const previewList = h("div");
  const previewEmpty = h("p", { className: "muted" }, "No examples yet: upload a file.");
  const previous = h("button", { type: "button", className: "secondary", testid: "preview-previous" }, "Previous");
  const next = h("button", { type: "button", className: "secondary", testid: "preview-next" }, "Next");
  const previewFilled = h(
    "div",
    { hidden: true },
    h("p", { className: "muted" }, previewRange, " The prompt is context only (masked from the loss); the model learns to write the completion."),
    previewList,
    h("div", { className: "actions", role: "group", "aria-label": "Pages of examples" }, previous, next),
  );
  fill(previewBox, h("h2", {}, "Preview"), previewEmpty, previewFilled);
  let pages = [null];
  let nextAfter = null;
  previous.addEventListener("click", () => loadPreview(pages.slice(0, -1)).catch(toastError));
  next.addEventListener("click", () => loadPreview([...pages, nextAfter]).catch(toastError));

  async function loadPreview(cursors = [null]) {
    const focused = document.activeElement;
    previous.disabled = next.disabled = true; // a click while a page loads would ask for the same page again
    try {
      const after = cursors[cursors.length - 1];
      const page = await api(`${base}/inputs?limit=${PREVIEW}${after === null ? "" : `&after=${after}`}`, { signal });
      pages = cursors;
      nextAfter = page.next_after;
      const first = (pages.length - 1) * PREVIEW + 1;
      fill(previewRange, `Examples ${fmtNum(first)}–${fmtNum(first + page.items.length - 1)} of ${fmtNum(page.total)}.`);
      fill(previewList, page.items.map(exampleView));
      previewEmpty.hidden = page.items.length > 0;
      previewFilled.hidden = !page.items.length;
    } finally {
      previous.disabled = pages.length < 2;
      next.disabled = nextAfter === null;
      // Keep the keyboard's place: on the button pressed, or on the other one at the first or last page.
      if (focused === next || focused === previous) (focused.disabled ? (focused === next ? previous : next) : focused).focus();
    }
  }

  async function loadVersions() {
    const versions = await apiAll(`${base}/versions`, { signal });
    fill(
      versionsBox,
      table(
        versions,
        [
          { label: "Version", cell: (v) => h("code", {}, v.id) },
          { label: "State", cell: (v) => [stateBadge(v.state), v.message ? h("div", { className: "field-help" }, v.message) : null] },
          { label: "Examples", cell: (v) => fmtNum(v.example_count), className: "num" },
          { label: "Tokens min / mean / max", cell: (v) => range(v.stats && v.stats.tokens) },
          { label: "Content hash", cell: (v) => (v.content_hash ? h("code", { title: v.content_hash }, v.content_hash.slice(0, 12)) : "—") },
          { label: "Created", cell: (v) => fmtDate(v.created_at) },
          { label: "Actions", cell: deleteVersionButton },
        ],
        { caption: "Versions", testid: "versions-table", empty: "No versions yet. Create one to train on this data." },
      ),
    );
    if (versions.some((v) => v.state === "PENDING" || v.state === "IN_PROGRESS")) {
      setTimeout(() => signal.aborted || loadVersions().catch(() => {}), 1000);
    }
  }

  const versionError = h("div"); // a refused create or delete (a 409 naming the run that trains on it)
  function deleteVersionButton(v) {
    const attrs = { type: "button", className: "danger", testid: `delete-version-${v.id}`, "aria-label": `Delete version ${v.id}` };
    return onDelete(h("button", attrs, "Delete"), `Delete version '${v.id}' of dataset '${params.dataset}' and its snapshot? Models already trained on it keep working.`, {
      remove: () => api(`${base}/versions/${enc(v.id)}`, { method: "DELETE" }),
      done: loadVersions,
      errorHolder: versionError,
      errorTestid: "delete-version-error",
    });
  }

  const removeError = h("div");
  const remove = onDelete(
    h("button", { type: "button", className: "danger", testid: "delete-dataset" }, "Delete dataset"),
    `Delete dataset '${params.dataset}' with its inputs, uploaded files and all its versions?`,
    {
      remove: () => api(base, { method: "DELETE" }),
      done: () => navigate(`/apps/${enc(params.app)}/datasets`),
      errorHolder: removeError,
      errorTestid: "delete-dataset-error",
    },
  );

  const createButton = h("button", { type: "button", testid: "create-version" }, "Create version");
  createButton.addEventListener("click", () =>
    whileBusy(createButton, async () => {
      fill(versionError);
      try {
        const v = await api(`${base}/versions`, { method: "POST", signal });
        toast(`Version ${v.id}: ${v.state}`);
        await loadVersions();
      } catch (err) {
        fill(versionError, errorBox(err, "create-version-error"));
      }
    }),
  );

  main.append(
    pageHeader(
      `Dataset ${params.dataset}`,
      h("a", { href: "/api/csv-template", className: "button secondary", testid: "csv-template", onclick: downloadTemplate }, "Download CSV template"),
      remove,
    ),
    removeError,
    h("section", { className: "panel", "aria-labelledby": "upload-title" }, h("h2", { id: "upload-title" }, "Upload"), drop, progress, progressText, uploadError),
    reportBox,
    previewBox,
    h(
      "section",
      { "aria-labelledby": "versions-title" },
      h("div", { className: "page-head" }, h("h2", { id: "versions-title" }, "Versions"), createButton),
      h("p", { className: "muted" }, "A version is an immutable snapshot of the valid examples; models train on versions."),
      versionError,
      versionsBox,
    ),
  );
  if (lastReports.has(reportKey)) fill(reportBox, reportView(lastReports.get(reportKey), tolerance));
  await Promise.all([loadPreview(), loadVersions()]);
});
