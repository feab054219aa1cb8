/**
 * A small SVG line chart: several named series of (x, y) points, axes with ticks, a legend.
 *
 *   import { lineChart } from "../chart.js";
 *   const chart = lineChart({ title: "Loss", xLabel: "step", yLabel: "loss", testid: "loss-chart" });
 *   parent.append(chart.el);
 *   chart.update([{ name: "train loss", points: [[1, 2.3], [2, 2.1]] }, { name: "eval loss", points: [...] }]);
 *
 * Each series is drawn as a <path data-series="name"> (plus a dot per point when it has few
 * points) and named in the legend by its `label` (else its name) unless it says `legend: false` (a
 * series sharing another's colour and entry); the <svg> has role="img" and an aria-label summarising the series. Long series are
 * downsampled by whoever reads them (the API's `max_points`): every point given is drawn.
 */

const SVG = "http://www.w3.org/2000/svg";
/** Points per series worth reading for a chart (about two per pixel of its width): pass it as the API's `max_points`. */
export const CHART_POINTS = 1000;
export const PALETTE = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#be123c", "#0e7490", "#4d5562", "#a16207"];
const W = 640;
const H = 300;
const M = { top: 14, right: 16, bottom: 44, left: 66 };

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Round tick values covering [lo, hi] (about `count` of them). */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function label(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 10000 || a < 0.001) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

/** [min, max] of coordinate `i` of `points` (a loop: spreading 100,000 arguments overflows the stack). */
function extent(points, i) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of points) {
    if (p[i] < lo) lo = p[i];
    if (p[i] > hi) hi = p[i];
  }
  return [lo, hi];
}

export function lineChart({ title = "", xLabel = "step", yLabel = "", testid, height = H } = {}) {
  const root = document.createElement("figure");
  root.className = "chart";
  if (testid) root.dataset.testid = testid;
  root.style.margin = "0";
  const svg = el("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": title || "chart" });
  const legend = document.createElement("ul");
  legend.className = "legend";
  root.append(svg, legend);
  if (title) {
    const cap = document.createElement("figcaption");
    cap.className = "muted";
    cap.textContent = title;
    root.prepend(cap);
  }

  function update(series) {
    svg.replaceChildren();
    legend.replaceChildren();
    const all = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])));
    const iw = W - M.left - M.right;
    const ih = height - M.top - M.bottom;
    if (!all.length) {
      svg.append(el("text", { x: W / 2, y: height / 2, "text-anchor": "middle" }, "No points yet"));
      svg.setAttribute("aria-label", `${title || "chart"}: no points yet`);
      return;
    }
    let [x0, x1] = extent(all, 0);
    let [y0, y1] = extent(all, 1);
    if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
    if (y1 === y0) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1];
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * iw;
    const sy = (y) => M.top + ih - ((y - y0) / (y1 - y0)) * ih;

    const axes = el("g", { class: "axis" });
    for (const t of ticks(y0, y1, 5)) {
      const y = sy(t);
      axes.append(el("line", { x1: M.left, x2: M.left + iw, y1: y, y2: y, class: "grid" }));
      axes.append(el("text", { x: M.left - 6, y: y + 4, "text-anchor": "end" }, label(t)));
    }
    const xt = ticks(x0, x1, 6).filter((t) => Number.isInteger(t) || x1 - x0 < 6);
    for (const t of xt) {
      const x = sx(t);
      axes.append(el("line", { x1: x, x2: x, y1: M.top + ih, y2: M.top + ih + 5 }));
      axes.append(el("text", { x, y: M.top + ih + 18, "text-anchor": "middle" }, label(t)));
    }
    axes.append(el("line", { x1: M.left, x2: M.left + iw, y1: M.top + ih, y2: M.top + ih }));
    axes.append(el("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih }));
    axes.append(el("text", { x: M.left + iw / 2, y: height - 6, "text-anchor": "middle" }, xLabel));
    if (yLabel) {
      const yl = el("text", { x: 0, y: 0, "text-anchor": "middle", transform: `translate(14 ${M.top + ih / 2}) rotate(-90)` }, yLabel);
      axes.append(yl);
    }
    svg.append(axes);

    const summary = [];
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
      const g = el("g", { "data-series": s.name });
      if (pts.length) {
        const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
        const path = el("path", { d, fill: "none", stroke: color, "stroke-width": 2, "data-series": s.name });
        if (s.dash) path.setAttribute("stroke-dasharray", "6 4");
        g.append(path);
        if (pts.length <= 40 || s.dots) {
          for (const p of pts) g.append(el("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.8, fill: color }));
        }
        const last = pts[pts.length - 1];
        summary.push(`${s.name}: ${pts.length} points, last ${label(last[1])} at ${xLabel} ${last[0]}`);
      }
      svg.append(g);
      if (s.legend === false) return;
      const item = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color;
      item.append(sw, s.label || s.name);
      legend.append(item);
    });
    svg.setAttribute("aria-label", `${title || "chart"}. ${summary.join("; ")}`);
  }

  update([]);
  return { el: root, update };
}
