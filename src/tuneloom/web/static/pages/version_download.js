// Take a trained version away: the server packs it as `tuneloom export` writes it (the LoRA adapter,
// merged weights, or one GGUF file for llama.cpp / Ollama) and answers a link that needs no key, which
// the browser follows as a normal download — to disk, with its own progress, however large the file.
import { api, errorBox, fill, fmtNum, h } from "../app.js";

const CHOICES = [
  { value: "adapter", label: "LoRA adapter (peft)", body: { format: "adapter" } },
  { value: "merged", label: "Merged weights (plain transformers)", body: { format: "merged" } },
  { value: "gguf-f16", label: "GGUF, F16 (llama.cpp, Ollama)", body: { format: "gguf", gguf_type: "f16" } },
  { value: "gguf-q8_0", label: "GGUF, Q8_0 — about half the size", body: { format: "gguf", gguf_type: "q8_0" } },
  { value: "gguf-q4_k_m", label: "GGUF, Q4_K_M — about a third (Ollama's default)", body: { format: "gguf", gguf_type: "q4_k_m" } },
  { value: "gguf-bf16", label: "GGUF, BF16", body: { format: "gguf", gguf_type: "bf16" } },
  { value: "gguf-f32", label: "GGUF, F32", body: { format: "gguf", gguf_type: "f32" } },
];

function fmtMiB(bytes) {
  return `${fmtNum(bytes / (1024 * 1024), 3)} MiB`;
}

/** The Download block of a trained version's Results; `base` is the version's API path. */
export function downloadForm(base, signal) {
  const format = h(
    "select",
    { id: "export-format", testid: "export-format" },
    CHOICES.map((c) => h("option", { value: c.value }, c.label)),
  );
  const button = h("button", { type: "submit", testid: "export-download" }, "Download");
  const note = h("p", { className: "muted", testid: "export-status", "aria-live": "polite" });
  const error = h("div");
  const form = h(
    "form",
    { className: "inline-form", testid: "export-form" },
    h("div", {}, h("label", { for: "export-format" }, "Format"), format),
    button,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const choice = CHOICES.find((c) => c.value === format.value);
    button.disabled = true;
    fill(error);
    fill(note, "Preparing the file on the server (it loads the model: seconds here, minutes for a large one)…");
    try {
      const built = await api(`${base}/exports`, { method: "POST", body: choice.body, signal });
      const a = h("a", { href: built.download_url, download: built.file_name, testid: "export-link" }, built.file_name);
      fill(note, "Downloading ", a, ` (${fmtMiB(built.size_bytes)}; SHA-256 `, h("code", { testid: "export-sha256" }, built.sha256), "). The link works for an hour.");
      a.click();
    } catch (err) {
      if (err.name === "AbortError") return;
      fill(note);
      fill(error, errorBox(err, "export-error"));
    } finally {
      button.disabled = false;
    }
  });
  return h("div", {}, h("h3", {}, "Download"), form, note, error);
}
