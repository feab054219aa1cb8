// Placeholder: the Compare page (helper D replaces this file).
import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/compare", ({ main }) => {
  main.append(pageHeader("Compare"), h("p", { className: "muted" }, "Comparing versions is coming."));
});
