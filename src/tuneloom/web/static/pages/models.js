// Models of an app: the list and the way to add one.
import { api, appPath, enc, fill, fmtDate, h, link, pageHeader, registerPage, table } from "../app.js";

registerPage("/apps/:app/models", async ({ main, params, signal }) => {
  const list = h("div");
  main.append(
    pageHeader("Models", link(`#/apps/${enc(params.app)}/models/new`, "Add model", { className: "button", testid: "add-model" })),
    list,
  );
  const models = await api(`${appPath(params.app)}/models`, { signal });
  fill(
    list,
    table(
      models,
      [
        { label: "Model", cell: (m) => link(`#/apps/${enc(params.app)}/models/${enc(m.id)}`, m.id) },
        { label: "Type", cell: (m) => (m.model_type_id === "text-to-text" ? "Text Generator (text-to-text)" : m.model_type_id) },
        { label: "Created", cell: (m) => fmtDate(m.created_at) },
      ],
      { caption: "Models", testid: "models-table", empty: "No models yet: add one to train it on a dataset version." },
    ),
  );
});
