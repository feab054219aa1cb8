/**
 * The Generate page's results: one input streamed token by token into "gen-output" (server-sent
 * events from POST {model}/generate, shown once a frame), several inputs as a "gen-results" table
 * from one POST {model}/predict, and a stopped stream marked as such. Each writes its progress and
 * timing to the page's status line; `model` is the model's API path (…/models/{id}).
 */
import { api, fill, h, streamedText, streamSSE, table } from "../app.js";

const secondsSince = (started) => ((performance.now() - started) / 1000).toFixed(1);

/** Stream one input's output into `output`; throws what the stream throws (AbortError when stopped). */
export async function streamOutput(model, body, { signal, output, status }) {
  const pre = h("pre", { className: "gen-output", testid: "gen-output", "aria-live": "polite", "aria-busy": "true", tabindex: "0" });
  const cursor = h("span", { className: "cursor", "aria-hidden": "true" });
  pre.append(cursor);
  fill(output, h("h2", {}, "Output"), pre);
  const shown = streamedText(pre, cursor, (pieces) => {
    pre.dataset.pieces = String(pieces);
    fill(status, `Generating… ${pieces} piece${pieces === 1 ? "" : "s"}`);
  });
  let finished = null;
  const started = performance.now();
  fill(status, "Generating…");
  try {
    await streamSSE(`${model}/generate`, {
      method: "POST",
      body,
      signal,
      onEvent: (event, data) => {
        if (event === "message" && data && typeof data.text === "string") {
          shown.add(data.text);
        } else if (event === "done") {
          finished = data;
        } else if (event === "error") {
          const err = new Error((data && data.message) || "generation failed");
          err.code = data && data.code;
          throw err;
        }
      },
    });
  } finally {
    shown.flush(); // what arrived is shown, whether it finished, stopped or failed
  }
  cursor.remove();
  pre.setAttribute("aria-busy", "false");
  const seconds = secondsSince(started);
  if (finished) {
    const tokens = finished.tokens !== undefined ? `${finished.tokens} tokens · ` : "";
    fill(
      status,
      `Done in ${seconds} s · ${tokens}finish reason: ${finished.finish_reason} · version ${finished.model_version_id}`,
    );
    pre.dataset.done = "true";
  } else {
    fill(status, `The stream ended after ${seconds} s without a finish.`);
  }
}

/** Generate every input of `body.inputs` at once and show them in a table, in input order. */
export async function predictTable(model, body, { signal, output, status }) {
  fill(status, `Generating ${body.inputs.length} outputs…`);
  fill(output);
  const started = performance.now();
  const result = await api(`${model}/predict`, { method: "POST", body, signal });
  const rows = body.inputs.map((input, i) => ({ input, ...result.outputs[i] }));
  fill(
    output,
    h("h2", {}, "Outputs"),
    table(
      rows,
      [
        { label: "#", cell: (r) => String(rows.indexOf(r) + 1), className: "num" },
        { label: "Input", cell: (r) => r.input, className: "text" },
        { label: "Output", cell: (r) => r.text, className: "text output-cell" },
        { label: "Finish", cell: (r) => r.finish_reason },
        { label: "Tokens", cell: (r) => String(r.tokens), className: "num" },
      ],
      { caption: `Outputs of version ${result.model_version_id}`, testid: "gen-results" },
    ),
  );
  fill(status, `Done in ${secondsSince(started)} s · ${rows.length} outputs · version ${result.model_version_id}`);
}

/** The user pressed Stop: the streamed output (if any) keeps what arrived, marked stopped. */
export function markStopped(output, status) {
  fill(status, "Stopped.");
  const pre = output.querySelector(".gen-output");
  if (pre) {
    pre.setAttribute("aria-busy", "false");
    pre.dataset.done = "stopped";
    const cursor = pre.querySelector(".cursor");
    if (cursor) cursor.remove();
  }
}
