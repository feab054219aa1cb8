import { h, pageHeader, registerPage } from "../app.js";

registerPage("/apps/:app/model_new", ({ main }) => {
  main.append(pageHeader("model_new"), h("p", {}, "Coming."));
});
