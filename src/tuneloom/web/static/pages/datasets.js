// Datasets of an app: list and create. The app's landing page.
import { api, appPath, enc, errorBox, fill, fmtDate, h, link, navigate, pageHeader, registerPage, table, whileBusy } from "../app.js";

async function render({ main, params, signal }) {
  const base = `${appPath(params.app)}/datasets`;
  const list = h("div");
  const formError = h("div");
  const id = h("input", { id: "dataset-id", name: "id", required: true, testid: "dataset-id", autocomplete: "off" });
  const create = h("button", { type: "submit", testid: "create-dataset" }, "Create dataset");
  main.append(
    pageHeader("Datasets"),
    h(
      "form",
      {
        className: "panel",
        onsubmit: async (e) => {
          e.preventDefault();
          fill(formError);
          await whileBusy(create, async () => {
            try {
              const ds = await api(base, { method: "POST", body: { id: id.value.trim() } });
              navigate(`/apps/${enc(params.app)}/datasets/${enc(ds.id)}`);
            } catch (err) {
              fill(formError, errorBox(err, "create-dataset-error"));
            }
          });
        },
      },
      h("h2", {}, "New dataset"),
      h("div", { className: "inline-form" }, h("div", {}, h("label", { for: "dataset-id" }, "Dataset id"), id), create),
      formError,
    ),
    list,
  );
  const datasets = await api(base, { signal });
  fill(
    list,
    table(
      datasets,
      [
        { label: "Dataset", cell: (d) => link(`#/apps/${enc(params.app)}/datasets/${enc(d.id)}`, d.id) },
        { label: "Name", cell: (d) => d.name || "—" },
        { label: "Created", cell: (d) => fmtDate(d.created_at) },
      ],
      { caption: "Datasets", testid: "datasets-table", empty: "No datasets yet: create one, then upload a file to it." },
    ),
  );
}

registerPage("/apps/:app", render);
registerPage("/apps/:app/datasets", render);
