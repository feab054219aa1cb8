import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/model", ({ main }) => {
  main.append(pageHeader("model"), h("p", {}, "Coming."));
});
