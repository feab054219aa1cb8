// Sign-in: the API key is kept in sessionStorage (this tab only) and checked against the API first.
import { ApiError, clearKey, errorBox, fill, h, navigate, registerPage, request, setKey } from "../app.js";

registerPage("/", ({ main }) => {
  document.title = "Sign in · tuneloom";
  const input = h("input", {
    id: "api-key",
    type: "password",
    name: "api-key",
    autocomplete: "current-password",
    required: true,
    testid: "api-key",
    "aria-describedby": "api-key-help",
  });
  const error = h("div");
  const button = h("button", { type: "submit", testid: "sign-in" }, "Sign in");
  const form = h(
    "form",
    {
      className: "panel signin",
      onsubmit: async (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        button.disabled = true;
        setKey(key);
        try {
          const response = await request("/api/apps", { headers: { Authorization: `Key ${key}` } });
          if (!response.ok) {
            let body = null;
            try {
              body = await response.json();
            } catch {
              body = null;
            }
            throw new ApiError(response.status, body);
          }
          navigate("/apps");
        } catch (err) {
          clearKey();
          fill(error, errorBox(err, "sign-in-error"));
          button.disabled = false;
          input.setAttribute("aria-invalid", "true");
          input.focus();
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API key made with ", h("code", {}, "tuneloom keys create"), "."),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { className: "field-help", id: "api-key-help" }, "Kept in this browser tab only, until you sign out or close it."),
    error,
    h("p", {}, button),
  );
  main.append(form);
  input.focus();
});
