// Placeholder: the Generate playground (helper D replaces this file).
import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/generate", ({ main }) => {
  main.append(pageHeader("Generate"), h("p", { className: "muted" }, "The playground is coming."));
});
