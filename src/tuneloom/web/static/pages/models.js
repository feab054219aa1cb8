import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/models", ({ main }) => {
  main.append(pageHeader("models"), h("p", {}, "Coming."));
});
