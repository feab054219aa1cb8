/**
 * A training run's loss chart and log on its page (pages/version.js), bounded however long the run.
 *
 * The curve is read downsampled by the server (`/metrics?max_points=`: per series its first and
 * last point exact and, between them, the lowest and highest point of each bucket), then the
 * points the events stream sends are added; once they outgrow that read it is read again, so the
 * page holds a few thousand points whether the run has a hundred steps or a million.
 * A run retried from its checkpoint logs again steps it had logged past it: a streamed loss at or
 * below the step of the last one replaces the tail from its step on (that attempt's training was
 * abandoned; `/metrics` leaves it out too, `telemetry.abandoned`), so the chart shows the resumed
 * curve as it grows.
 * The log is read from its tail (`/logs?tail=true`), then the streamed lines are appended once
 * per frame (one layout, however many lines arrived) and only the newest MAX_LOG_LINES are kept on
 * the page; "Download the whole log" fetches every line, a page at a time.
 *
 * Stable names for tests: chart "loss-chart" · logs "logs" (one child per line) · note "logs-note"
 * ("The last N of M lines.") · button "Download the whole log" ("download-logs").
 */
import { CHART_POINTS, lineChart } from "../chart.js";
import { api, fill, fmtNum, h, toast, whileBusy } from "../app.js";

export const MAX_LOG_LINES = 1000; // kept on the page, the newest
const LOG_PAGE = 1000; // lines per request when downloading the whole log (the API's most)

const present = (x) => x !== null && x !== undefined;

/**
 * The loss chart of the run at `base`: `read()` it, `add(point)` from the stream; `lastPoint` (the
 * number of the last point recorded that it has) is where the stream goes on.
 */
export function liveCurve(base, signal) {
  const chart = lineChart({ title: "Loss per step", xLabel: "step", yLabel: "loss", testid: "loss-chart" });
  let points = new Map(); // step → {loss, eval_loss}
  let lastLoss = null; // the step of the last loss point recorded: a loss at or below it is where the run resumed
  let lastPoint = null;
  let resumes = 0; // times the stream went back to an earlier step
  let budget = 2 * CHART_POINTS; // points the stream may add before the curve is read again
  let reading = false;
  let frame = null;

  function merge(into, p) {
    const old = into.get(p.step) || {};
    into.set(p.step, {
      loss: present(p.loss) ? p.loss : old.loss,
      eval_loss: present(p.eval_loss) ? p.eval_loss : old.eval_loss,
    });
    if (present(p.loss) && (lastLoss === null || p.step > lastLoss)) lastLoss = p.step;
    if (present(p.point) && (lastPoint === null || p.point > lastPoint)) lastPoint = p.point;
  }

  /** The run resumed from a checkpoint at `step`: the tail from there on was abandoned. */
  function goBack(step) {
    for (const s of [...points.keys()]) if (s >= step) points.delete(s);
    lastLoss = null;
    resumes += 1;
  }

  function draw() {
    frame = null;
    const steps = [...points.keys()].sort((a, b) => a - b);
    const series = (key) => steps.filter((s) => present(points.get(s)[key])).map((s) => [s, points.get(s)[key]]);
    chart.update([
      { name: "train loss", points: series("loss") },
      { name: "eval loss", points: series("eval_loss"), dash: true, dots: true },
    ]);
  }

  function redraw() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  async function read() {
    reading = true;
    try {
      const wentBack = resumes;
      const rows = await api(`${base}/metrics?max_points=${CHART_POINTS}`, { signal });
      if (resumes !== wentBack) return; // what was read may hold the tail the stream has since replaced
      const fresh = new Map();
      for (const p of rows) merge(fresh, p);
      const upTo = rows.length ? rows[rows.length - 1].step : null;
      for (const [step, p] of points) if (upTo === null || step >= upTo) merge(fresh, { step, ...p }); // streamed meanwhile
      points = fresh;
      budget = points.size + 2 * CHART_POINTS;
      redraw();
    } finally {
      reading = false;
    }
  }

  function add(point) {
    if (present(point.loss) && lastLoss !== null && point.step <= lastLoss) goBack(point.step);
    merge(points, point);
    if (points.size > budget && !reading) {
      budget = points.size + 2 * CHART_POINTS; // a failed read is tried again only after as many more points
      read().catch(() => {});
    }
    redraw();
  }

  return {
    el: chart.el,
    read,
    add,
    draw,
    get lastPoint() {
      return lastPoint;
    },
  };
}

/** A log line as the page shows it. */
function lineView(line) {
  const level = (line.level || "info").toLowerCase();
  const time = line.at ? new Date(line.at).toLocaleTimeString() : "";
  const className = level === "error" ? "error-line" : level === "warning" ? "warning" : "";
  return h("span", { className }, `${time} ${level.toUpperCase()} ${line.message}\n`);
}

/** Every line of the log at `base`, a page at a time, saved as the text file `name`. */
async function downloadLog(base, name, signal) {
  const parts = [];
  for (let after = 0; ; ) {
    const page = await api(`${base}/logs?after=${after}&limit=${LOG_PAGE}`, { signal });
    for (const line of page) parts.push(`${line.at} ${(line.level || "info").toUpperCase()} ${line.message}\n`);
    if (page.length < LOG_PAGE) break;
    after = page[page.length - 1].seq;
  }
  const url = URL.createObjectURL(new Blob(parts, { type: "text/plain" }));
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** The log of the run at `base`: `read()` its tail, `add(line)` from the stream; `lastSeq` is where the stream goes on. */
export function liveLog(base, fileName, signal) {
  const pre = h("pre", { className: "logs", testid: "logs", tabindex: "0", "aria-label": "Training logs" });
  const note = h("p", { className: "muted", testid: "logs-note" });
  const download = h("button", { type: "button", className: "secondary", testid: "download-logs", hidden: true }, "Download the whole log");
  download.addEventListener("click", () =>
    whileBusy(download, () => downloadLog(base, fileName, signal)).catch((err) => err.name === "AbortError" || toast(err.message)),
  );
  let lastSeq = 0; // lines are numbered from 1 without gaps: the last number is the log's length
  let pending = [];
  let frame = null;

  function flush() {
    frame = null;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 20;
    const fragment = document.createDocumentFragment();
    for (const line of pending.slice(-MAX_LOG_LINES)) fragment.append(lineView(line));
    pending = [];
    pre.append(fragment);
    while (pre.childElementCount > MAX_LOG_LINES) pre.firstElementChild.remove();
    const shown = pre.childElementCount;
    fill(note, lastSeq > shown ? `The last ${fmtNum(shown)} of ${fmtNum(lastSeq)} lines.` : "");
    download.hidden = !lastSeq;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function add(line) {
    if (line.seq <= lastSeq) return;
    lastSeq = line.seq;
    pending.push(line);
    if (pending.length > 2 * MAX_LOG_LINES) pending = pending.slice(-MAX_LOG_LINES); // a hidden tab draws no frames
    if (!frame) frame = requestAnimationFrame(flush);
  }

  async function read() {
    const tail = await api(`${base}/logs?tail=true&limit=${MAX_LOG_LINES}`, { signal });
    tail.forEach(add);
  }

  return {
    el: h("div", {}, note, pre, h("div", { className: "actions log-actions" }, download)),
    read,
    add,
    get lastSeq() {
      return lastSeq;
    },
  };
}
