/**
 * The Generate page's inference parameters: what they are (names, kinds, the server's defaults, a
 * line of help each), their form fields ("param-<name>"), and reading the form back into the
 * `inference_params` of a request (a field left empty is left to the server).
 */
import { h } from "../app.js";

/** The inference parameters: [name, kind, default, help]. Defaults are the server's ("" leaves it to the
 * model); a "signed" number may be negative. */
export const PARAMS = [
  ["max_tokens", "int", 64, "Most new tokens to generate (1–4096)."],
  ["temperature", "float", 0, "0 is greedy decoding; higher is more random (0–5)."],
  ["top_p", "float", 1, "Nucleus sampling: keep the smallest set of tokens with this much probability."],
  ["top_k", "int", 0, "Keep only the k likeliest tokens (0 turns it off)."],
  ["repetition_penalty", "float", "", "Above 1 makes tokens already in the prompt or output less likely (above 0, at most 10); empty: the model's own, else 1."],
  ["presence_penalty", "signed", 0, "Lowers every token the output already holds by this much (−2–2)."],
  ["frequency_penalty", "signed", 0, "Lowers a token by this much per time the output holds it (−2–2)."],
  ["num_beams", "int", 1, "Beam search width (1 is no beam search)."],
  ["do_sample", "tristate", "", "Sample instead of picking the likeliest token; automatic samples when temperature > 0."],
  ["return_full_text", "bool", false, "Return the prompt in front of the generated text."],
  ["system_prompt", "text", "", "Put in front of every input, as the template's system part."],
  ["stop", "lines", "", "Stop strings, one per line: generation ends before any of them."],
];

/** A labelled field for one parameter, its help line tied to it (aria-describedby). */
function paramField(name, kind, value, help) {
  const id = `param-${name}`;
  const helpId = `${id}-help`;
  const common = { id, name, testid: id, "aria-describedby": helpId };
  let control;
  if (kind === "bool") {
    control = h("input", { ...common, type: "checkbox", checked: Boolean(value) });
    return h(
      "div",
      { className: "param param-check" },
      h("label", { for: id }, control, h("span", {}, name)),
      h("p", { className: "field-help", id: helpId }, help),
    );
  }
  if (kind === "tristate") {
    control = h(
      "select",
      common,
      h("option", { value: "" }, "automatic"),
      h("option", { value: "true" }, "true"),
      h("option", { value: "false" }, "false"),
    );
  } else if (kind === "lines" || kind === "text") {
    control = h("textarea", { ...common, rows: 2, className: "short" });
    control.value = value;
  } else {
    const attrs = kind === "int" ? { step: 1, min: 0 } : kind === "signed" ? { step: "any" } : { step: "any", min: 0 };
    control = h("input", { ...common, type: "number", inputmode: kind === "int" ? "numeric" : "decimal", ...attrs });
    control.value = String(value);
  }
  return h(
    "div",
    { className: "param" },
    h("label", { for: id }, name),
    control,
    h("p", { className: "field-help", id: helpId }, help),
  );
}

/** The form fields of every parameter, each at the server's default. */
export function paramFields() {
  return PARAMS.map(([name, kind, value, help]) => paramField(name, kind, value, help));
}

/** Read the parameter form into an inference_params body (empty fields are left to the server). */
export function readParams(form) {
  const out = {};
  for (const [name, kind] of PARAMS) {
    const el = form.querySelector(`[name="${name}"]`);
    if (!el) continue;
    el.removeAttribute("aria-invalid");
    if (kind === "bool") out[name] = el.checked;
    else if (kind === "tristate") {
      if (el.value) out[name] = el.value === "true";
    } else if (kind === "lines") {
      const stops = el.value.split("\n").filter((s) => s !== "");
      if (stops.length) out[name] = stops;
    } else if (kind === "text") {
      if (el.value.trim()) out[name] = el.value;
    } else if (el.value.trim() !== "") {
      const n = Number(el.value);
      out[name] = Number.isFinite(n) ? n : el.value; // the server names a bad value
    }
  }
  return out;
}
