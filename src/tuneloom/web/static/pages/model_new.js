// Add a model and train it: type → model id, dataset version, tolerance, template, the five settings
// (JSON editors pre-filled with the template's defaults, checked by the server as you type), Train.
import { api, apiAll, appPath, enc, errorBox, fill, h, navigate, pageHeader, registerPage, whileBusy } from "../app.js";

export const SETTINGS = ["model_config", "quantization_config", "peft_config", "tokenizer_config", "trainer_config"];
const TOLERANCE = "invalid_data_tolerance_percent";
const DEBOUNCE_MS = 300;

/** What a JSON value is, in JSON's words ("an array", "a number"…). */
function jsonKind(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return { string: "a string", number: "a number", boolean: "a boolean" }[typeof value] || typeof value;
}

function field(id, labelText, control, help) {
  return h(
    "div",
    {},
    h("label", { for: id }, labelText),
    control,
    help ? h("p", { className: "field-help", id: `${id}-help` }, help) : null,
  );
}

registerPage("/apps/:app/models/new", async ({ main, params, query, signal }) => {
  const app = appPath(params.app);
  const [datasets, templates] = await Promise.all([
    api(`${app}/datasets`, { signal }),
    api("/api/templates", { signal }),
  ]);

  const formError = h("div", { testid: "form-error" });
  const modelId = h("input", {
    id: "model-id",
    name: "model-id",
    required: true,
    autocomplete: "off",
    testid: "model-id",
    value: query.get("model") || "",
    "aria-describedby": "model-id-help",
  });
  const dataset = h(
    "select",
    { id: "dataset", required: true, testid: "dataset" },
    h("option", { value: "" }, datasets.length ? "Choose a dataset" : "No datasets yet"),
    datasets.map((d) => h("option", { value: d.id }, d.id)),
  );
  const version = h("select", { id: "dataset-version", required: true, testid: "dataset-version", "aria-describedby": "dataset-version-help" });
  const versionHelp = h("p", { className: "field-help", id: "dataset-version-help" }, "Only READY versions can be trained on.");
  const tolerance = h("input", {
    id: "tolerance",
    type: "number",
    min: 0,
    max: 100,
    step: "any",
    value: "5",
    testid: "tolerance",
    "aria-describedby": "tolerance-help tolerance-error",
  });
  const toleranceError = h("p", { className: "field-error", id: "tolerance-error", testid: "tolerance-error", "aria-live": "polite" });
  const template = h(
    "select",
    { id: "template", testid: "template", "aria-describedby": "template-info" },
    templates.map((t) => h("option", { value: t.id }, `${t.id} (${t.parameters} parameters${t.requires_gpu ? ", GPU" : ""})`)),
  );
  const templateInfo = h("p", { className: "field-help", id: "template-info", testid: "template-info", "aria-live": "polite" });
  const editors = {};
  const editorErrors = {};
  for (const name of SETTINGS) {
    editors[name] = h("textarea", {
      id: `setting-${name}`,
      className: "code",
      spellcheck: "false",
      rows: 8,
      testid: `setting-${name}`,
      "aria-describedby": `setting-${name}-error`,
    });
    editorErrors[name] = h("p", { className: "field-error", id: `setting-${name}-error`, testid: `setting-${name}-error`, "aria-live": "polite" });
  }
  const validity = h("p", { className: "muted", testid: "settings-status", "aria-live": "polite" });
  const train = h("button", { type: "submit", testid: "train" }, "Train");

  // "Train again from this version": the new run starts from that version's weights, so its
  // template is fixed (the server refuses another one, naming the key).
  const resumeFrom = query.get("resume");
  const resumeNote = resumeFrom
    ? h("p", { className: "field-help", testid: "resume-note" }, "Continues from version ", h("code", {}, resumeFrom), " of this model, with its template.")
    : null;
  const wanted = query.get("template");
  const preferred = templates.find((t) => t.id === wanted) || templates.find((t) => t.id === "smollm2-135m-instruct-lora") || templates[0];
  if (preferred) template.value = preferred.id;
  template.disabled = Boolean(resumeFrom);

  let versionsRequest = 0; // only the latest dataset choice's versions are listed, whatever order they arrive in
  async function loadVersions() {
    const mine = ++versionsRequest;
    fill(version);
    if (!dataset.value) {
      version.append(h("option", { value: "" }, "Choose a dataset first"));
      return;
    }
    const versions = await apiAll(`${app}/datasets/${enc(dataset.value)}/versions`, { signal });
    if (mine !== versionsRequest) return;
    const ready = versions.filter((v) => v.state === "READY");
    if (!ready.length) version.append(h("option", { value: "" }, "No READY version: create one on the dataset page"));
    for (const v of ready) version.append(h("option", { value: v.id }, `${v.id} — ${v.example_count} examples`));
  }

  function showTemplate() {
    const t = templates.find((x) => x.id === template.value);
    fill(
      templateInfo,
      t
        ? `${t.description} Base model ${t.base_model}, ${t.parameters} parameters${t.requires_gpu ? "; needs a GPU" : ""}${t.offline ? "" : "; downloads from the Hugging Face Hub"}.`
        : "",
    );
  }

  // The editors are read-only while a template's defaults load, so that nothing typed meanwhile
  // is overwritten; only the latest template choice's answer is applied, whatever order they arrive in.
  let defaultsRequest = 0;
  async function loadDefaults() {
    showTemplate();
    const mine = ++defaultsRequest;
    setDefaultsLoading(true);
    fill(validity, "Loading the template's defaults…");
    try {
      const defaults = await api(`/api/template-params?template=${enc(template.value)}`, { signal });
      if (mine !== defaultsRequest) return;
      for (const name of SETTINGS) editors[name].value = JSON.stringify(defaults[name] || {}, null, 2);
      tolerance.value = String(defaults[TOLERANCE]);
      clearErrors();
      fill(validity, "Settings are the template's defaults.");
    } finally {
      if (mine === defaultsRequest) setDefaultsLoading(false);
    }
  }

  function setDefaultsLoading(loading) {
    for (const field of [...Object.values(editors), tolerance]) field.readOnly = loading;
    form.setAttribute("aria-busy", String(loading));
  }

  function clearErrors() {
    for (const name of SETTINGS) {
      fill(editorErrors[name]);
      editors[name].removeAttribute("aria-invalid");
    }
    fill(toleranceError);
    tolerance.removeAttribute("aria-invalid");
    fill(formError);
  }

  /** The settings as the API takes them, or null after marking the editors that are not JSON objects. */
  function collect() {
    const body = { template: template.value };
    let ok = true;
    for (const name of SETTINGS) {
      const text = editors[name].value.trim();
      if (!text) continue;
      let problem = null;
      try {
        const value = JSON.parse(text);
        if (value === null || typeof value !== "object" || Array.isArray(value)) problem = `Must be a JSON object ({…}), not ${jsonKind(value)}.`;
        else body[name] = value;
      } catch (err) {
        problem = `Not valid JSON: ${err.message}`;
      }
      if (problem) {
        ok = false;
        editors[name].setAttribute("aria-invalid", "true");
        fill(editorErrors[name], problem);
      }
    }
    if (tolerance.value.trim() !== "") body[TOLERANCE] = Number(tolerance.value);
    return ok ? body : null;
  }

  /** Show a refusal by the fields it names: each setting's own message when several failed
   * (`details.errors`); returns the first such field (null when it names none on this form). */
  function showError(err) {
    const each = err.details && Array.isArray(err.details.errors) ? err.details.errors : [err];
    return each.map(showOne).find(Boolean) || null;
  }

  function showOne(err) {
    const key = err.key || "";
    const name = SETTINGS.find((n) => key === n || key.startsWith(`${n}.`));
    if (name) {
      editors[name].setAttribute("aria-invalid", "true");
      editorErrors[name].append(h("span", { className: "field-error-line" }, err.message)); // one line per wrong key
      return editors[name];
    }
    if (key === TOLERANCE) {
      tolerance.setAttribute("aria-invalid", "true");
      fill(toleranceError, err.message);
      return tolerance;
    }
    fill(formError, errorBox(err, "form-error-message"));
    const field = { "model id": modelId, model_id: modelId, dataset_version_id: version }[key] || null;
    if (field) field.setAttribute("aria-invalid", "true");
    return field;
  }

  let timer = null;
  let generation = 0;
  async function validate() {
    const mine = ++generation;
    clearErrors();
    const body = collect();
    if (!body) {
      fill(validity, "Fix the JSON to check the settings.");
      return false;
    }
    try {
      await api(`${app}/settings/validate`, { method: "POST", body, signal });
      if (mine === generation) fill(validity, "✓ The server accepts these settings.");
      return true;
    } catch (err) {
      if (mine !== generation || err.name === "AbortError") return false;
      fill(validity, "The server refuses these settings.");
      showError(err);
      return false;
    }
  }
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(validate, DEBOUNCE_MS);
  };
  for (const name of SETTINGS) editors[name].addEventListener("input", schedule);
  tolerance.addEventListener("input", schedule);
  template.addEventListener("change", () => loadDefaults().catch((err) => fill(formError, errorBox(err))));
  dataset.addEventListener("change", () => loadVersions().catch((err) => fill(formError, errorBox(err))));

  async function ensureModel(id) {
    const models = await api(`${app}/models`, { signal });
    if (!models.some((m) => m.id === id)) {
      await api(`${app}/models`, { method: "POST", body: { id, model_type_id: "text-to-text" }, signal });
    }
  }

  const form = h(
    "form",
    {
      className: "panel",
      testid: "model-form",
      hidden: true,
      onsubmit: async (e) => {
        e.preventDefault();
        clearTimeout(timer);
        let invalid = null; // the field to take the focus when the run is refused
        await whileBusy(train, async () => {
          try {
            clearErrors();
            const body = collect();
            if (!body) {
              invalid = SETTINGS.map((n) => editors[n]).find((el) => el.getAttribute("aria-invalid") === "true");
              return;
            }
            if (!version.value) {
              fill(formError, errorBox({ message: "Choose a dataset and one of its READY versions." }, "form-error-message"));
              invalid = dataset.value ? version : dataset;
              return;
            }
            const id = modelId.value.trim();
            await ensureModel(id);
            const run = await api(`${app}/models/${enc(id)}/versions`, {
              method: "POST",
              body: { ...body, dataset_version_id: version.value, ...(resumeFrom ? { resume_from_model: resumeFrom } : {}) },
              signal,
            });
            navigate(`/apps/${enc(params.app)}/models/${enc(id)}/versions/${enc(run.id)}`);
          } catch (err) {
            if (err.name === "AbortError") return;
            invalid = showError(err);
          }
        });
        if (invalid) invalid.focus();
      },
    },
    h("h2", {}, "Text Generator"),
    h(
      "div",
      { className: "grid2" },
      field("model-id", "Model id", modelId, "Lowercase letters, digits, '_' or '-'. An existing model gets a new version."),
      field("template", "Template", template),
    ),
    templateInfo,
    resumeNote,
    h(
      "div",
      { className: "grid2" },
      field("dataset", "Dataset", dataset),
      h("div", {}, h("label", { for: "dataset-version" }, "Dataset version"), version, versionHelp),
    ),
    h(
      "div",
      { className: "grid2" },
      h(
        "div",
        {},
        h("label", { for: "tolerance" }, "Invalid data tolerance (%)"),
        tolerance,
        h("p", { className: "field-help", id: "tolerance-help" }, "Training refuses a dataset with a larger share of invalid rows."),
        toleranceError,
      ),
    ),
    h("h3", {}, "Settings"),
    h(
      "p",
      { className: "muted" },
      "Each is a JSON object, pre-filled with the template's defaults. Keys you change override the defaults one by one; the server checks them as you type.",
    ),
    h("div", { className: "grid2" }, SETTINGS.map((name) => h("div", {}, h("label", { for: `setting-${name}` }, name), editors[name], editorErrors[name]))),
    validity,
    formError,
    h("p", {}, train),
  );

  const choice = h(
    "button",
    {
      type: "button",
      className: "choice",
      "aria-pressed": "false",
      testid: "type-text-to-text",
      "aria-controls": "model-form",
      "aria-label": "Text Generator (text-to-text)",
      "aria-describedby": "type-help",
    },
    h("strong", {}, "Text Generator (text-to-text)"),
    h("span", { className: "muted", id: "type-help" }, "Fine-tune a language model to write the completion for a prompt."),
  );
  form.id = "model-form";
  choice.addEventListener("click", () => {
    choice.setAttribute("aria-pressed", "true");
    form.hidden = false;
    modelId.focus();
  });

  main.append(
    pageHeader("Add model"),
    h("section", { className: "panel", "aria-labelledby": "type-title" }, h("h2", { id: "type-title" }, "Build a custom model"), choice),
    form,
  );
  const firstWithData = datasets[0];
  if (firstWithData) dataset.value = query.get("dataset") || firstWithData.id;
  await Promise.all([loadVersions(), loadDefaults()]);
  if (query.get("model")) choice.click();
});
