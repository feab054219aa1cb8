// Apps: list, create, delete.
import { api, errorBox, fill, fmtDate, h, link, navigate, pageHeader, registerPage, table, enc, whileBusy } from "../app.js";

registerPage("/apps", async ({ main, signal }) => {
  const list = h("div", { "aria-live": "polite" });
  const formError = h("div");
  const listError = h("div"); // a failed delete, above the table it was asked from
  const id = h("input", { id: "app-id", name: "id", required: true, testid: "app-id", pattern: "[a-z0-9][a-z0-9_\\-]*", autocomplete: "off", "aria-describedby": "app-id-help" });
  const name = h("input", { id: "app-name", name: "name", testid: "app-name", autocomplete: "off" });
  const create = h("button", { type: "submit", testid: "create-app" }, "Create app");

  async function load() {
    const apps = await api("/api/apps", { signal });
    fill(
      list,
      table(
        apps,
        [
          { label: "App", cell: (a) => link(`#/apps/${enc(a.id)}/datasets`, a.id, { testid: `app-${a.id}` }) },
          { label: "Name", cell: (a) => a.name || "—" },
          { label: "Created", cell: (a) => fmtDate(a.created_at) },
          {
            label: "Actions",
            cell: (a) =>
              h(
                "button",
                {
                  type: "button",
                  className: "danger",
                  testid: `delete-app-${a.id}`,
                  "aria-label": `Delete ${a.id}`,
                  onclick: async () => {
                    if (!confirm(`Delete app '${a.id}' with all its datasets and models?`)) return;
                    fill(listError);
                    try {
                      await api(`/api/apps/${enc(a.id)}`, { method: "DELETE" });
                    } catch (err) {
                      fill(listError, errorBox(err, "delete-app-error"));
                    }
                    await load(); // also after a refusal: a 404 means another tab deleted it already
                  },
                },
                "Delete",
              ),
          },
        ],
        { caption: "Apps", testid: "apps-table", empty: "No apps yet: create one above." },
      ),
    );
  }

  main.append(
    pageHeader("Apps"),
    h(
      "form",
      {
        className: "panel",
        onsubmit: async (e) => {
          e.preventDefault();
          fill(formError);
          await whileBusy(create, async () => {
            try {
              const app = await api("/api/apps", { method: "POST", body: { id: id.value.trim(), name: name.value.trim() } });
              navigate(`/apps/${enc(app.id)}/datasets`);
            } catch (err) {
              fill(formError, errorBox(err, "create-app-error"));
            }
          });
        },
      },
      h("h2", {}, "New app"),
      h(
        "div",
        { className: "inline-form" },
        h("div", {}, h("label", { for: "app-id" }, "App id"), id),
        h("div", {}, h("label", { for: "app-name" }, "Name"), name),
        create,
      ),
      h("p", { className: "field-help", id: "app-id-help" }, "App id: lowercase letters, digits, '_' or '-'. The name is optional."),
      formError,
    ),
    listError,
    list,
  );
  await load();
});
