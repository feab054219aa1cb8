import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/version", ({ main }) => {
  main.append(pageHeader("version"), h("p", {}, "Coming."));
});
