// Chart helpers over uPlot (vendored at /ui/static/vendor/uplot, loaded as a global).
import {h} from "./common.js";

const uPlot = window.uPlot;

export const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2",
  "#db2777", "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#a16207"];
export const BASELINE_COLOR = "#4b5563";

/** One colour per family, stable for a list of families (relu, the baseline, in grey). */
export function familyColors(families) {
  const map = new Map();
  let i = 0;
  for (const f of families) {
    if (map.has(f)) continue;
    map.set(f, f === "relu" ? BASELINE_COLOR : PALETTE[i++ % PALETTE.length]);
  }
  return (f) => {
    if (!map.has(f)) map.set(f, PALETTE[i++ % PALETTE.length]);
    return map.get(f);
  };
}

export function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

const charts = new Set();
const observer = new ResizeObserver((entries) => {
  for (const e of entries) {
    const u = e.target.__uplot;
    if (!u) continue;
    const w = Math.floor(e.contentRect.width);
    if (w > 0 && Math.abs(w - u.width) > 2) u.setSize({width: w, height: u.height});
  }
});

/**
 * A chart in `host` (an element already in the page). Returns the uPlot instance.
 * spec: {x, series: [{label, values, color, dash, width, points, fill, step, show}],
 *        xLabel, yLabel, height, aria, legend, xRange, yRange, bars}
 */
export function chart(host, spec) {
  destroy(host);
  host.replaceChildren();
  const width = Math.max(200, Math.floor(host.clientWidth || host.parentElement?.clientWidth || 600));
  const series = [{label: spec.xLabel || "x", value: (u, v) => (v === null || v === undefined ? "–" : fmtTick(v))}];
  const data = [spec.x];
  for (const s of spec.series) {
    const opt = {
      label: s.label,
      stroke: s.color,
      width: s.width ?? 2,
      dash: s.dash || undefined,
      spanGaps: s.spanGaps ?? false,
      show: s.show ?? true,
      points: s.points ? {show: true, size: s.pointSize || 7, fill: s.color, stroke: s.color}
        : {show: false},
      value: (u, v) => (v === null || v === undefined ? "–" : fmtTick(v)),
    };
    if (s.points && !s.line) opt.paths = () => null;
    if (s.step) opt.paths = uPlot.paths.stepped({align: 1});
    if (s.bars) opt.paths = uPlot.paths.bars({size: [0.9, 80]});
    if (s.fill) opt.fill = s.fill;
    series.push(opt);
    data.push(s.values);
  }
  const opts = {
    width,
    height: spec.height || 260,
    series,
    scales: {
      x: {time: false, ...(spec.xRange ? {range: spec.xRange} : {})},
      y: spec.yRange ? {range: spec.yRange} : {},
    },
    axes: [
      {label: spec.xLabel, stroke: "#374151", grid: {stroke: "#e5e7eb"}, ticks: {stroke: "#d1d5db"},
        ...(spec.xInt ? {incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]} : {})},
      {label: spec.yLabel, stroke: "#374151", grid: {stroke: "#e5e7eb"}, ticks: {stroke: "#d1d5db"},
        size: 56, values: (u, vals) => vals.map(fmtTick)},
    ],
    legend: {show: spec.legend !== false, live: spec.legend !== false},
    cursor: {drag: {x: true, y: false}, points: {size: 6}},
  };
  if (spec.compact) {
    opts.axes = [{show: false}, {show: false}];
    opts.legend = {show: false};
    opts.cursor = {show: false};
    opts.padding = [4, 4, 4, 4];
  }
  const u = new uPlot(opts, data, host);
  host.__uplot = u;
  if (spec.aria) {
    host.setAttribute("role", "img");
    host.setAttribute("aria-label", spec.aria);
    for (const c of host.querySelectorAll("canvas")) c.setAttribute("aria-label", spec.aria);
  }
  charts.add(u);
  observer.observe(host);
  return u;
}

export function destroy(host) {
  if (host.__uplot) {
    observer.unobserve(host);
    charts.delete(host.__uplot);
    host.__uplot.destroy();
    host.__uplot = null;
  }
}

function fmtTick(v) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  if (Number.isInteger(v)) return String(v);
  return String(+v.toPrecision(4));
}

/** A figure: caption + chart host; build the chart with chart(fig.host, ...) once in the page. */
export function figure(caption, {height = 260, id, note} = {}) {
  const host = h("div", {class: "chart", style: {minHeight: `${height}px`}});
  const fig = h("figure", {class: "fig", ...(id ? {id} : {})},
    h("figcaption", {}, caption), host, note ? h("p", {class: "note"}, note) : null);
  fig.host = host;
  return fig;
}

export function legendKey(items) {
  return h("ul", {class: "legend-key", "aria-label": "legend"}, items.map(([color, label, dashed]) =>
    h("li", {}, h("span", {class: `swatch${dashed ? " dashed" : ""}`, style: {borderColor: color,
      background: dashed ? "transparent" : color}}), label)));
}

/** Linear interpolation of (xs, ys) at `grid` (null outside xs or where ys is null). */
export function resample(xs, ys, grid) {
  const out = new Array(grid.length).fill(null);
  if (!xs || xs.length < 2) return out;
  let j = 0;
  for (let i = 0; i < grid.length; i++) {
    const g = grid[i];
    if (g < xs[0] || g > xs[xs.length - 1]) continue;
    while (j < xs.length - 2 && xs[j + 1] < g) j++;
    const x0 = xs[j], x1 = xs[j + 1], y0 = ys[j], y1 = ys[j + 1];
    if (y0 === null || y1 === null || x0 === null || x1 === null) continue;
    const t = x1 === x0 ? 0 : (g - x0) / (x1 - x0);
    out[i] = y0 + t * (y1 - y0);
  }
  return out;
}

/** Histogram density (hist over edges) read at each grid point (null outside the edges). */
export function histAt(hist, edges, grid) {
  const out = new Array(grid.length).fill(null);
  if (!edges || edges.length < 2) return out;
  const total = hist.reduce((a, b) => a + (b || 0), 0) || 1;
  let j = 0;
  for (let i = 0; i < grid.length; i++) {
    const g = grid[i];
    if (g < edges[0] || g > edges[edges.length - 1]) continue;
    while (j < hist.length - 1 && edges[j + 1] < g) j++;
    const w = edges[j + 1] - edges[j] || 1;
    out[i] = (hist[j] || 0) / total / w;
  }
  return out;
}

export function linspace(a, b, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = a + ((b - a) * i) / (n - 1);
  return out;
}

/** The curve of one unit, or the mean over units (y is (units, len(x)) nested lists). */
export function unitCurve(y, unit = null) {
  if (!Array.isArray(y) || y.length === 0) return [];
  if (!Array.isArray(y[0])) return y;
  if (unit !== null) return y[unit] || [];
  if (y.length === 1) return y[0];
  const n = y[0].length;
  const out = new Array(n).fill(0);
  for (let i = 0; i < n; i++) {
    let s = 0, c = 0;
    for (const row of y) if (row[i] !== null && row[i] !== undefined) { s += row[i]; c++; }
    out[i] = c ? s / c : null;
  }
  return out;
}
