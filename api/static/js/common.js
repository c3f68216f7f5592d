// Shared helpers of the dashboard pages: DOM building, the JSON API, formatting, polling.

import {authDownloads, authHeaders, showLogin, showWho} from "./auth.js";

// Once per page (every page module imports this one): who is logged in, authed downloads.
showWho();
authDownloads();

export const POLL_MS = 2000;
export const TERMINAL = new Set(["complete", "failed", "cancelled"]);
export const SEARCH_STATES = ["pending", "running", "finalizing", "complete", "failed", "cancelled"];

/** Build an element: h("a", {href: "/", class: "x"}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "html") el.innerHTML = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace an element's children, skipping null/undefined/false (which replaceChildren would print). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** An error the API answered with: status, its `detail`, and structured `errors` if any. */
export class ApiError extends Error {
  constructor(status, detail, errors) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
    this.errors = errors || [];
  }
}

/** fetch a JSON endpoint with the stored API key; throws ApiError on a non-2xx answer (401: login form). */
export async function api(path, {method = "GET", json, body, signal} = {}) {
  const init = {method, signal, headers: {Accept: "application/json", ...authHeaders()}};
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the service is unreachable (${err.message})`);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    const detail = data && typeof data === "object" && "detail" in data ? data.detail
      : `${res.status} ${res.statusText}`;
    if (res.status === 401) showLogin();
    throw new ApiError(res.status, detail, data && data.errors);
  }
  return data;
}

/** Every row of a paginated list endpoint ({data, count}), up to `max`. */
export async function apiAll(path, max = 5000) {
  const sep = path.includes("?") ? "&" : "?";
  const out = [];
  for (let offset = 0; offset < max; offset += 500) {
    const page = await api(`${path}${sep}limit=500&offset=${offset}`);
    out.push(...page.data);
    if (out.length >= page.count || page.data.length === 0) break;
  }
  return out;
}

export const fmt = {
  num(v, digits = 4) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return v.toFixed(digits);
  },
  signed(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);  // a difference of exactly 0 keeps its decimals: "±0.0000"
    return (v > 0 ? "+" : v < 0 ? "−" : "±") + (a === 0 ? a.toFixed(digits) : fmt.num(a, digits));
  },
  int(v) {
    return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US");
  },
  dur(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  },
  date(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
  },
  value(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return fmt.num(v);
    if (Array.isArray(v)) return v.length > 6 ? `[${v.length} values]` : `[${v.map(fmt.value).join(", ")}]`;
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  },
};

/** The architecture of a spec as text ("mlp:32,32" or a dict). */
export function archText(arch) {
  if (typeof arch === "string") return arch;
  if (!arch || typeof arch !== "object") return "–";
  const hidden = (arch.hidden || []).join(",");
  if (arch.kind === "cnn") return `cnn:${(arch.conv_channels || []).join(",")}/${hidden}`;
  if (arch.kind === "resnet") return `resnet:${(arch.conv_channels || []).join(",")}${hidden ? "/" + hidden : ""}`;
  if (arch.kind === "transformer") {
    return `transformer:d=${arch.d_model ?? 64},layers=${arch.n_layers ?? 2},heads=${arch.heads ?? 4}`;
  }
  if (arch.kind === "mlp") return `mlp:${hidden}`;
  // a user's own nn.Module (actsearch.search_module): its class name and act() slot widths
  if (arch.kind === "module") return `module ${arch.name} (act slots ${(arch.slots || []).join(",")})`;
  return JSON.stringify(arch);
}

let curveLabelsPromise = null;

/** Family name -> what its curve shows ("activation", or "gate response" for gated units). */
export function curveLabels() {
  if (!curveLabelsPromise) {
    curveLabelsPromise = api("/activations")
      .then((body) => new Map(body.data.map((a) => [a.name, a.curve_label || "activation"])))
      .catch(() => new Map());
  }
  return curveLabelsPromise;
}

/** True when the family's curve is a gate response (glu, swiglu, ...), not an activation. */
export function isGateCurve(labels, family) {
  return (labels && labels.get(family)) === "gate response";
}

export function badge(state) {
  return h("span", {class: `badge st-${state}`}, state);
}

/** A stacked progress bar: complete / pruned / failed (and running) of the budget. */
export function progressBar(p) {
  const budget = Math.max(p.budget || 0, p.done || 0, 1);
  const pct = (n) => `${Math.min(100, (100 * n) / budget).toFixed(1)}%`;
  const label = `${p.done} of ${p.budget} trials done: ${p.complete} complete, ${p.pruned} pruned, ${p.failed} failed` +
    (p.running ? `, ${p.running} running` : "");
  const bar = h("div", {class: "progress", role: "progressbar", "aria-label": label,
    "aria-valuemin": 0, "aria-valuemax": p.budget, "aria-valuenow": p.done, title: label},
  h("span", {class: "seg complete", style: {width: pct(p.complete)}}),
  h("span", {class: "seg pruned", style: {width: pct(p.pruned)}}),
  h("span", {class: "seg failed", style: {width: pct(p.failed)}}),
  h("span", {class: "seg running", style: {width: pct(Math.min(p.running || 0, budget - p.done))}}));
  let text = `${p.done}/${p.budget}`;
  const extra = [];
  if (p.pruned) extra.push(`${p.pruned} pruned`);
  if (p.failed) extra.push(`${p.failed} failed`);
  if (p.running) extra.push(`${p.running} running`);
  if (p.phase === "finalists" || (p.finalists_done && p.phase !== "done")) {
    extra.push(`finalists ${p.finalists_done}/${p.finalists_total}`);
  }
  if (p.phase === "control" && p.control) {
    extra.push(`ReLU control ${p.control.candidate_epochs}/${p.control.target_candidate_epochs} candidate-epochs`);
  }
  if (extra.length) text += ` · ${extra.join(" · ")}`;
  return h("div", {class: "progress-wrap"}, bar, h("span", {class: "progress-text"}, text));
}

/** Poll `fn` every `ms` while it returns true (awaits it; never overlaps; pauses when hidden). */
export function poll(fn, ms = POLL_MS) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    let again = true;
    if (!document.hidden) {
      try { again = await fn(); } catch (err) { console.warn("poll failed", err); }
    }
    if (!stopped && again !== false) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}

export function pageId() {
  const raw = document.body.dataset.id;
  return raw ? Number(raw) : null;
}

export function mount(...children) {
  const app = $("#app");
  fill(app, ...children);
  app.setAttribute("aria-busy", "false");
  return app;
}

export function errorBox(err, what = "") {
  const msg = err instanceof ApiError ? err.message : String(err && err.message || err);
  return h("div", {class: "alert error", role: "alert"}, what ? `${what}: ${msg}` : msg);
}

export function section(title, attrs = {}, ...children) {
  const id = attrs.id || `sec-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", {class: `card ${attrs.class || ""}`, id, "aria-labelledby": `${id}-h`},
    h("h2", {id: `${id}-h`}, title), ...children);
}

/** A table wrapped for horizontal scrolling on narrow screens. */
export function table(caption, headers, rows, attrs = {}) {
  const thead = h("thead", {}, h("tr", {}, headers.map((hd) =>
    h("th", {scope: "col", class: hd.class || null, title: hd.title || null}, hd.label ?? hd))));
  const t = h("table", {class: `tbl ${attrs.class || ""}`, ...(attrs.id ? {id: attrs.id} : {})},
    caption ? h("caption", {class: "sr-only"}, caption) : null, thead, h("tbody", {}, rows));
  return h("div", {class: "tbl-wrap", tabindex: 0, role: "region", "aria-label": caption || "table"}, t);
}

export function keyValues(pairs, label) {
  return h("dl", {class: "kv", "aria-label": label || null},
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v instanceof Node ? v : String(v ?? "–"))]));
}

export function setTitle(text) {
  document.title = `${text} · actsearch`;
}
