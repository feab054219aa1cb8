import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/dataset", ({ main }) => {
  main.append(pageHeader("dataset"), h("p", {}, "Coming."));
});
