// Search page (/ui/searches/{id}): leaderboard, learned curves, history, importance, trials.
import {api, apiAll, ApiError, archText, badge, curveLabels, errorBox, fill, fmt, h, isGateCurve, keyValues, mount, pageId, poll,
  progressBar, section, setTitle, TERMINAL} from "./common.js";
import {alpha, chart, familyColors, figure, histAt, legendKey, linspace, resample,
  unitCurve} from "./charts.js";

const id = pageId();
const S = {detail: null, board: null, trials: [], inter: null, imp: null, evaluator: "fanova",
  acts: new Map(), layer: 0, epochIdx: null, sort: {key: "value", dir: -1},
  filter: {text: "", state: "", phase: ""}, color: null, sig: ""};

// ------------------------------------------------------------------ skeleton

const head = h("div", {class: "page-head"});
const meta = h("div", {class: "card meta", id: "search-meta"});
const boardBox = h("div", {id: "leaderboard"});
const layerSel = h("select", {id: "curve-layer", "aria-label": "Layer of the learned activations"});
const epochSlider = h("input", {type: "range", id: "curve-epoch", min: 0, max: 0, step: 1, value: 0,
  "aria-label": "Training epoch of the learned activations"});
const epochOut = h("output", {for: "curve-epoch", id: "curve-epoch-out"}, "");
const curveFig = figure("Learned activations of the finalists (solid) and their starting points at epoch 0 (dashed)",
  {height: 300, id: "fig-curves"});
const histFig = figure("Pre-activation histogram (where the data falls)", {height: 170, id: "fig-hist"});
const curveNote = h("p", {class: "note", id: "curve-note"});
const historyFig = figure("Optimisation history: validation value per trial", {id: "fig-history"});
const interFig = figure("Intermediate values: per-epoch validation metric of every trial", {id: "fig-intermediate"});
const interKey = h("div");
const impBox = h("div", {id: "importance"});
const evalSel = h("select", {id: "imp-evaluator", "aria-label": "Importance evaluator"},
  [["fanova", "fANOVA"], ["mean_decrease_impurity", "Mean decrease impurity"], ["ped_anova", "PED-ANOVA"]]
    .map(([v, t]) => h("option", {value: v}, t)));
const trialsBox = h("div", {id: "trials"});
const trialCount = h("span", {class: "muted"});
const filterText = h("input", {type: "search", id: "t-filter", placeholder: "family or parameter",
  "aria-label": "Filter trials by text"});
const filterState = h("select", {id: "t-state", "aria-label": "Filter trials by state"},
  ["", "complete", "pruned", "failed", "running"].map((s) => h("option", {value: s}, s || "all states")));
const filterPhase = h("select", {id: "t-phase", "aria-label": "Filter trials by phase"},
  ["", "search", "finalist", "control", "control_finalist"].map((s) => h("option", {value: s}, s || "all phases")));

function skeleton() {
  mount(
    head, meta,
    section("Leaderboard", {id: "sec-leaderboard"}, boardBox),
    section("Learned activations", {id: "sec-curves"},
      h("div", {class: "controls"},
        h("label", {for: "curve-layer"}, "Layer"), layerSel,
        h("label", {for: "curve-epoch"}, "Epoch"), epochSlider, epochOut),
      curveFig, histFig, curveNote),
    h("div", {class: "grid2"},
      section("Optimisation history", {id: "sec-history"}, historyFig),
      section("Intermediate values", {id: "sec-intermediate"}, interFig, interKey)),
    section("Parameter importance", {id: "sec-importance"},
      h("div", {class: "controls"}, h("label", {for: "imp-evaluator"}, "Evaluator"), evalSel), impBox),
    section("Trials", {id: "sec-trials"},
      h("div", {class: "controls"},
        h("label", {for: "t-filter"}, "Filter"), filterText, filterState, filterPhase, trialCount),
      trialsBox),
  );
  layerSel.addEventListener("change", () => { S.layer = Number(layerSel.value); renderCurves(); });
  epochSlider.addEventListener("input", () => { S.epochIdx = Number(epochSlider.value); renderCurves(); });
  evalSel.addEventListener("change", async () => { S.evaluator = evalSel.value; S.imp = null; await loadImportance(); });
  filterText.addEventListener("input", () => { S.filter.text = filterText.value.toLowerCase(); renderTrials(); });
  filterState.addEventListener("change", () => { S.filter.state = filterState.value; renderTrials(); });
  filterPhase.addEventListener("change", () => { S.filter.phase = filterPhase.value; renderTrials(); });
}

// ------------------------------------------------------------------ header

function renderHead() {
  const d = S.detail;
  setTitle(`Search ${d.id}: ${d.name}`);
  const actions = h("div", {class: "actions"});
  if (!TERMINAL.has(d.state)) {
    actions.append(h("button", {class: "btn danger", id: "cancel-btn", type: "button",
      "aria-label": `Cancel search ${d.id}`, onclick: cancel}, "Cancel search"));
  }
  if (d.state === "complete") {
    actions.append(h("a", {class: "btn", href: `/searches/${d.id}/export`, download: "",
      "aria-label": "Download the best model (zip)"}, "Download best model"));
  }
  head.replaceChildren(h("h1", {}, `Search #${d.id} `, h("span", {class: "light"}, d.name), " ", badge(d.state)), actions);
  const s = d.spec;
  const p = d.progress;
  fill(meta,
    progressBar(p),
    keyValues([
      ["Dataset", `${s.dataset}${s.dataset_version ? ` v${s.dataset_version}` : ""}`],
      ["Architecture", archText(s.architecture)],
      ["Families", s.families.join(", ")],
      ["Budget", `${s.trials} trials · ${s.epochs} epochs · ${s.finalist_seeds} finalist seeds`],
      ["Sampler / pruner", `${s.sampler} / ${s.pruner}`],
      ["Phase", p.phase],
      ["Best so far", p.best_value !== null ? [fmt.num(p.best_value), " (", p.best_family, ")"].join("") : "–"],
      d.best ? ["Final choice", `${d.best.family}: ${fmt.num(d.best.mean)} ± ${fmt.num(d.best.ci95)} (${d.best.metric}); ` +
        `ReLU ${fmt.num(d.best.baseline_mean)}, Δ ${fmt.signed(d.best.delta_vs_baseline)}`] : null,
      controlLine(d),
      ["Elapsed", fmt.dur(p.elapsed_s)],
      analysisPair(d.analysis),
      ["Optuna study", d.study_name],
    ], "Search details"),
    d.error ? h("div", {class: "alert error", role: "alert"}, d.error) : null,
  );
}

// The curve analysis (closed-form fits, distillation) runs after the leaderboard is stored.
const ANALYSING = new Set(["pending", "running"]);
const analysing = (d) => d.state === "complete" && ANALYSING.has(d.analysis?.state);

function analysisPair(a) {
  if (!a || !a.state) return null;
  const text = {pending: "running (fits, distillation)…", running: "running (fits, distillation)…",
    done: "done: closed-form fits and distillation on each trial's page", failed: `failed: ${a.error || "no reason recorded"}`}[a.state];
  return ["Analysis", h("span", {id: "analysis-state", "data-state": a.state,
    class: a.state === "failed" ? "neg" : a.state === "done" ? "" : "muted"}, text)];
}

/** The equal-compute ReLU control arm, in the details: its verdict, or how far it is. */
function controlLine(d) {
  const c = d.best && d.best.control;
  if (c) return ["Control (ReLU alone)", c.message];
  const p = d.progress.control;
  if (!p) return null;
  if (d.progress.phase !== "control") {
    return ["Control (ReLU alone)", TERMINAL.has(d.state) ? "did not run" : "runs once the finalists are done"];
  }
  return ["Control (ReLU alone)", `running: ${fmt.int(p.candidate_epochs)} of ${fmt.int(p.target_candidate_epochs)} candidate-epochs` +
    ` (${p.trials} trials)`];
}

async function cancel(ev) {
  const btn = ev.currentTarget;
  btn.disabled = true;
  btn.textContent = "Cancelling…";
  try {
    S.detail = await api(`/searches/${id}/cancel`, {method: "POST"});
    renderHead();
  } catch (err) {
    btn.replaceWith(errorBox(err, "cancel failed"));
  }
}

// ------------------------------------------------------------------ leaderboard

function renderBoard() {
  const b = S.board;
  if (!b || !b.rows.length) {
    boardBox.replaceChildren(h("p", {class: "muted"}, TERMINAL.has(S.detail.state)
      ? "No finalist finished: the leaderboard is empty."
      : "Finalists are re-trained on several seeds once the search phase ends; the leaderboard fills in then."));
    return;
  }
  const rows = b.rows.map((r) => h("tr", {class: r.baseline ? "baseline" : "", "data-family": r.family},
    h("td", {class: "num"}, r.rank),
    h("td", {}, h("span", {class: "dot", style: {background: S.color(r.family)}}), r.family,
      r.baseline ? h("span", {class: "tag"}, "baseline") : null,
      b.winner === r.family ? h("span", {class: "tag win"}, "winner") : null),
    h("td", {class: "num"}, `${fmt.num(r.mean)} ± ${fmt.num(r.ci95)}`, h("span", {class: "sub"}, `n=${r.n_seeds}`)),
    h("td", {class: `num ${r.delta_vs_baseline > 0 ? "pos" : r.delta_vs_baseline < 0 ? "neg" : ""}`},
      r.baseline ? "—" : fmt.signed(r.delta_vs_baseline)),
    h("td", {class: "num"}, r.test_mean !== null ? `${fmt.num(r.test_mean)} ± ${fmt.num(r.test_ci95)}` : "–"),
    h("td", {class: "num"}, fmt.int(r.n_params)),
    h("td", {class: "num"}, fmt.int(r.flops)),
    h("td", {class: "num"}, `${r.search_trials}${r.search_pruned ? ` (${r.search_pruned} pruned)` : ""}`
      + (r.budget_epochs ? ` × ${r.budget_epochs} ep` : "")),
    h("td", {class: "num"}, fmt.num(r.best_search_value)),
    h("td", {class: "small mono"}, Object.entries({...r.family_params, ...r.hparams})
      .map(([k, v]) => `${k}=${fmt.value(v)}`).join(" ")),
  ));
  const headers = ["Rank", "Family", {label: `${b.metric} mean ± 95% CI`, title: "validation metric over finalist seeds"},
    "Δ vs ReLU", {label: "Test", title: "scored for the final choice only"}, "Params", "FLOPs",
    {label: "Budget", title: "search trials (pruned) × epochs each: what this family received"},
    "Best search value", "Configuration"];
  const c = b.control;
  if (c) rows.push(controlRow(c));
  const t = h("table", {class: "tbl", id: "leaderboard-table"},
    h("caption", {class: "sr-only"}, "Leaderboard: finalists per family"),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {scope: "col", title: x.title || null}, x.label || x)))),
    h("tbody", {}, rows));
  boardBox.replaceChildren(h("div", {class: "tbl-wrap", tabindex: 0, role: "region", "aria-label": "Leaderboard"}, t),
    c ? h("p", {class: `verdict ${c.verdict}`, id: "control-verdict", role: "status"}, c.message,
      h("span", {class: "sub"}, ` control: ${fmt.int(c.candidate_epochs)} candidate-epochs vs the search's ` +
        `${fmt.int(c.search_candidate_epochs)}`)) : null,
    stoppedBox(b));
}

/** The families the race stopped, by rung: their budget there, never ranked with the finalists. */
function stoppedBox(b) {
  if (!b.stopped || !b.stopped.length) return null;
  const byRung = new Map();
  for (const s of b.stopped) byRung.set(s.rung, [...(byRung.get(s.rung) || []), s]);
  const items = [...byRung.entries()].sort((x, y) => y[0] - x[0]).map(([rung, fams]) =>
    h("li", {"data-rung": rung},
      h("strong", {}, `rung ${rung}`), ` (${fams[0].trials} trials × ${fams[0].epochs} epochs each): `,
      fams.map((s) => `${s.family} ${fmt.num(s.best_value)}`).join(", ")));
  return h("div", {id: "race-stopped"},
    h("p", {class: "muted small"}, "Stopped by the race (raced at equal trials and epochs within "
      + "each rung, rung 0 on the lr and weight decay a ReLU warm-up ranked best; the third with "
      + "the lowest validation loss went on, ReLU always). Values are the best metric at that "
      + "rung's budget:"),
    h("ul", {class: "small"}, items));
}

/** The control arm's row: not ranked; ReLU tuned alone with the search's compute. */
function controlRow(c) {
  return h("tr", {class: "control", "data-family": "control"},
    h("td", {class: "num"}, "—"),
    h("td", {}, h("span", {class: "dot", style: {background: S.color(c.family)}}), c.family,
      h("span", {class: "tag"}, "control"),
      h("span", {class: "sub"}, " tuned alone, same compute")),
    h("td", {class: "num"}, `${fmt.num(c.mean)} ± ${fmt.num(c.ci95)}`, h("span", {class: "sub"}, `n=${c.n_seeds}`)),
    h("td", {class: "num"}, "—"),
    h("td", {class: "num"}, c.test_mean !== null ? `${fmt.num(c.test_mean)} ± ${fmt.num(c.test_ci95)}` : "–"),
    h("td", {class: "num"}, "–"),
    h("td", {class: "num"}, "–"),
    h("td", {class: "num"}, `${c.trials}${c.pruned ? ` (${c.pruned} pruned)` : ""} × ${S.detail.spec.epochs} ep`),
    h("td", {class: "num"}, "–"),
    h("td", {class: "small mono"}, Object.entries({...c.family_params, ...c.hparams})
      .map(([k, v]) => `${k}=${fmt.value(v)}`).join(" ")),
  );
}

// ------------------------------------------------------------------ learned curves

/** The trial whose curves stand for each family: its best finalist, else its best search trial. */
function representatives() {
  const byFamily = new Map();
  const better = (a, b) => (b === undefined || (a.value ?? -Infinity) > (b.value ?? -Infinity));
  const fams = S.board && S.board.rows.length ? S.board.rows.map((r) => r.family) : null;
  for (const phase of ["finalist", "search"]) {
    for (const t of S.trials) {
      if (t.phase !== phase || t.state !== "complete") continue;
      if (fams && !fams.includes(t.family)) continue;
      if (byFamily.has(t.family) && byFamily.get(t.family).phase !== phase) continue;
      if (better(t, byFamily.get(t.family))) byFamily.set(t.family, t);
    }
  }
  const order = fams || [...byFamily.keys()];
  return order.filter((f) => byFamily.has(f)).map((f) => byFamily.get(f));
}

async function loadCurves() {
  S.curveLabels = await curveLabels();
  const reps = representatives();
  await Promise.all(reps.filter((t) => !S.acts.has(t.id)).map(async (t) => {
    try { S.acts.set(t.id, await api(`/trials/${t.id}/activations`)); } catch (err) { console.warn(err); }
  }));
  S.reps = reps.filter((t) => S.acts.has(t.id));
  const layers = [...new Set(S.reps.flatMap((t) => S.acts.get(t.id).curves.map((c) => c.layer)))].sort((a, b) => a - b);
  const epochs = [...new Set(S.reps.flatMap((t) => S.acts.get(t.id).curves.map((c) => c.epoch)))].sort((a, b) => a - b);
  const prevLayers = [...layerSel.options].map((o) => o.value).join();
  if (prevLayers !== layers.join()) {
    layerSel.replaceChildren(...layers.map((l) => h("option", {value: l}, `layer ${l}`)));
    if (!layers.includes(S.layer)) S.layer = layers[0] ?? 0;
    layerSel.value = S.layer;
  }
  const atEnd = S.epochIdx === null || S.epochIdx >= (S.epochs || []).length - 1;
  S.epochs = epochs;
  epochSlider.max = Math.max(0, epochs.length - 1);
  if (atEnd) S.epochIdx = Math.max(0, epochs.length - 1);
  epochSlider.value = S.epochIdx;
  epochSlider.disabled = epochs.length < 2;
  renderCurves();
}

function curveAt(acts, layer, epoch) {
  const cs = acts.curves.filter((c) => c.layer === layer).sort((a, b) => a.epoch - b.epoch);
  if (!cs.length) return [null, null];
  let cur = cs[0];
  for (const c of cs) if (c.epoch <= epoch) cur = c;
  return [cs[0], cur];
}

function histAtEpoch(acts, layer, epoch) {
  const hs = acts.histograms.filter((x) => x.layer === layer).sort((a, b) => a.epoch - b.epoch);
  let cur = hs[0] || null;
  for (const x of hs) if (x.epoch <= epoch) cur = x;
  return cur;
}

function renderCurves() {
  const reps = S.reps || [];
  if (!reps.length) {
    curveFig.host.replaceChildren(h("p", {class: "muted"}, "No trial has finished yet: the learned curves appear when one does."));
    histFig.hidden = true;
    return;
  }
  histFig.hidden = false;
  const epoch = S.epochs[S.epochIdx] ?? 0;
  epochOut.textContent = `epoch ${epoch}`;
  epochSlider.setAttribute("aria-valuetext", `epoch ${epoch}`);
  const layer = S.layer;
  const picked = reps.map((t) => {
    const acts = S.acts.get(t.id);
    const [start, cur] = curveAt(acts, layer, epoch);
    return {t, acts, start, cur, hist: histAtEpoch(acts, layer, epoch)};
  }).filter((p) => p.cur);
  const xs = picked.flatMap((p) => [p.cur.x, p.start.x]).flat().filter((v) => v !== null);
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const grid = linspace(lo, hi, 241);
  const series = [];
  const units = [];
  for (const p of picked) {
    const c = S.color(p.t.family);
    const n = p.cur.y_shape[0];
    if (n > 1) units.push(`${p.t.family} (${n} units)`);
    const tag = (p.t.phase === "finalist" ? "" : " (best search trial)") +
      (isGateCurve(S.curveLabels, p.t.family) ? " gate response" : "");
    series.push({label: `${p.t.family}${tag} @ epoch ${p.cur.epoch}`, color: c, width: 2.5,
      values: resample(p.cur.x, unitCurve(p.cur.y), grid)});
    series.push({label: `${p.t.family} start`, color: alpha(c, 0.8), width: 1.5, dash: [6, 4],
      values: resample(p.start.x, unitCurve(p.start.y), grid)});
  }
  const gated = picked.filter((p) => isGateCurve(S.curveLabels, p.t.family)).map((p) => p.t.family);
  chart(curveFig.host, {x: grid, series, xLabel: "pre-activation z", yLabel: gated.length ? "σ(z) or gate response g(u)" : "σ(z)", height: 300,
    aria: `Learned activation curves of ${picked.map((p) => p.t.family).join(", ")} at layer ${layer}, epoch ${epoch}, with their epoch-0 starting curves dashed`});
  const hseries = picked.filter((p) => p.hist).map((p) => ({label: `${p.t.family} (epoch ${p.hist.epoch})`,
    color: S.color(p.t.family), width: 1.5, step: true, fill: alpha(S.color(p.t.family), 0.12),
    values: histAt(p.hist.hist, p.hist.edges, grid)}));
  chart(histFig.host, {x: grid, series: hseries, xLabel: "pre-activation z", yLabel: "density", height: 170,
    aria: `Histogram of the pre-activations at layer ${layer}, epoch ${epoch}`});
  curveNote.textContent = (units.length ? `Per-unit families are drawn as the mean over their units (${units.join(", ")}); open a trial for every unit. ` : "") +
    (gated.length ? `Gated units (${gated.join(", ")}) are drawn as their gate response: the multiplier g(u) applied to the value half, as a function of the gate pre-activation u. ` : "") +
    "Each family is shown by its best finalist (the best search trial while the search runs); the x range spans the observed pre-activations.";
}

// ------------------------------------------------------------------ history and intermediate values

function renderHistory() {
  const st = S.trials.filter((t) => t.phase === "search" && t.trial_number !== null)
    .sort((a, b) => a.trial_number - b.trial_number);
  if (!st.length) {
    historyFig.host.replaceChildren(h("p", {class: "muted"}, "No trial yet."));
    return;
  }
  const maxN = Math.max(...st.map((t) => t.trial_number));
  const x = Array.from({length: maxN + 1}, (_, i) => i);
  const fams = [...new Set(st.map((t) => t.family))];
  const series = fams.map((f) => {
    const v = new Array(x.length).fill(null);
    for (const t of st) if (t.family === f && t.state === "complete") v[t.trial_number] = t.value;
    return {label: f, color: S.color(f), points: true, values: v};
  });
  const pruned = new Array(x.length).fill(null);
  for (const t of st) if (t.state === "pruned") pruned[t.trial_number] = t.value ?? t.best_value;
  if (pruned.some((v) => v !== null)) series.push({label: "pruned", color: "#9ca3af", points: true, pointSize: 5, values: pruned});
  const best = new Array(x.length).fill(null);
  let run = null;
  const byN = new Map(st.map((t) => [t.trial_number, t]));
  for (const n of x) {
    const t = byN.get(n);
    if (t && t.state === "complete" && t.value !== null) run = run === null ? t.value : Math.max(run, t.value);
    best[n] = run;
  }
  series.push({label: "best so far", color: "#111827", step: true, width: 1.5, values: best, spanGaps: true});
  chart(historyFig.host, {x, series, xInt: true, xLabel: "trial number", yLabel: "validation value",
    aria: `Optimisation history: validation value of ${st.length} search trials and the best so far`});
}

function renderIntermediate() {
  const trials = (S.inter?.trials || []).filter((t) => t.steps.length);
  if (!trials.length) {
    interFig.host.replaceChildren(h("p", {class: "muted"}, "No trial has reported an epoch yet."));
    interKey.replaceChildren();
    return;
  }
  const steps = [...new Set(trials.flatMap((t) => t.steps))].sort((a, b) => a - b);
  const idx = new Map(steps.map((s, i) => [s, i]));
  const series = trials.map((t) => {
    const v = new Array(steps.length).fill(null);
    t.steps.forEach((s, i) => { v[idx.get(s)] = t.values[i]; });
    const c = S.color(t.family || "?");
    return {label: `#${t.number} ${t.family || ""} (${t.state})`, color: t.state === "pruned" ? alpha(c, 0.75) : c,
      width: t.state === "pruned" ? 1.2 : 1.6, dash: t.state === "pruned" ? [5, 4] : null, values: v,
      points: steps.length < 3, line: true};
  });
  chart(interFig.host, {x: steps, series, xInt: true, xLabel: "epoch", yLabel: "validation value", legend: false,
    aria: `Intermediate values: per-epoch validation metric of ${trials.length} trials, ${trials.filter((t) => t.state === "pruned").length} pruned (dashed)`});
  const fams = [...new Set(trials.map((t) => t.family || "?"))];
  interKey.replaceChildren(legendKey([...fams.map((f) => [S.color(f), f, false]), ["#6b7280", "pruned", true]]));
}

// ------------------------------------------------------------------ importance

async function loadImportance() {
  try {
    S.imp = await api(`/searches/${id}/importance?evaluator=${S.evaluator}`);
  } catch (err) {
    impBox.replaceChildren(errorBox(err, "importance"));
    return;
  }
  const imp = S.imp;
  if (!imp.importances.length) {
    impBox.replaceChildren(h("p", {class: "muted"}, imp.message || "not available yet"));
    return;
  }
  const max = Math.max(...imp.importances.map((i) => i.importance)) || 1;
  impBox.replaceChildren(h("table", {class: "bars", id: "importance-table"},
    h("caption", {class: "sr-only"}, `Parameter importance (${imp.evaluator}, ${imp.n_complete} completed trials)`),
    h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Parameter"), h("th", {scope: "col"}, "Importance"))),
    h("tbody", {}, imp.importances.map((i) => h("tr", {},
      h("th", {scope: "row", class: "mono"}, i.param),
      h("td", {}, h("div", {class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 1,
        "aria-valuenow": i.importance.toFixed(3), "aria-label": `${i.param} importance`},
      h("span", {style: {width: `${(100 * i.importance) / max}%`}})),
      h("span", {class: "bar-val"}, i.importance.toFixed(3))))))),
  h("p", {class: "note"}, `${imp.evaluator} over ${imp.n_complete} completed trials (Optuna).`));
}

// ------------------------------------------------------------------ trials table

const COLS = [
  {key: "trial_number", label: "Trial", get: (t) => t.trial_number ?? -1,
    show: (t) => h("a", {href: `/ui/trials/${t.id}`}, t.trial_number !== null ? `#${t.trial_number}` : `id ${t.id}`)},
  {key: "phase", label: "Phase", get: (t) => t.phase},
  {key: "family", label: "Family", get: (t) => t.family,
    show: (t) => [h("span", {class: "dot", style: {background: S.color(t.family)}}), t.family]},
  {key: "state", label: "State", get: (t) => t.state, show: (t) => badge(t.state)},
  {key: "value", label: "Value", get: (t) => t.value, num: true, show: (t) => fmt.num(t.value)},
  {key: "test_value", label: "Test", get: (t) => t.test_value, num: true, show: (t) => fmt.num(t.test_value)},
  {key: "n_params", label: "Params", get: (t) => t.n_params, num: true, show: (t) => fmt.int(t.n_params)},
  {key: "flops", label: "FLOPs", get: (t) => t.flops, num: true, show: (t) => fmt.int(t.flops)},
  {key: "lr", label: "lr", get: (t) => t.hparams?.lr, num: true, show: (t) => fmt.num(t.hparams?.lr)},
  {key: "weight_decay", label: "weight decay", get: (t) => t.hparams?.weight_decay, num: true,
    show: (t) => fmt.num(t.hparams?.weight_decay)},
  {key: "duration_s", label: "Duration", get: (t) => t.duration_s, num: true, show: (t) => fmt.dur(t.duration_s)},
  {key: "family_params", label: "Family parameters", get: (t) => JSON.stringify(t.family_params),
    show: (t) => h("span", {class: "small mono"}, Object.entries(t.family_params || {}).map(([k, v]) => `${k}=${fmt.value(v)}`).join(" "))},
];

function renderTrials() {
  const f = S.filter;
  let rows = S.trials.filter((t) => (!f.state || t.state === f.state) && (!f.phase || t.phase === f.phase) &&
    (!f.text || `${t.family} ${JSON.stringify(t.family_params)} ${JSON.stringify(t.hparams)}`.toLowerCase().includes(f.text)));
  const col = COLS.find((c) => c.key === S.sort.key) || COLS[4];
  rows = rows.slice().sort((a, b) => {
    const va = col.get(a), vb = col.get(b);
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    return (va < vb ? -1 : va > vb ? 1 : 0) * S.sort.dir;
  });
  trialCount.textContent = `${rows.length} of ${S.trials.length} trials`;
  const th = (c) => {
    const active = S.sort.key === c.key;
    return h("th", {scope: "col", "aria-sort": active ? (S.sort.dir > 0 ? "ascending" : "descending") : "none"},
      h("button", {type: "button", class: "sort", "data-key": c.key, onclick: () => {
        S.sort = {key: c.key, dir: active ? -S.sort.dir : (c.num ? -1 : 1)};
        renderTrials();
      }}, c.label, h("span", {"aria-hidden": "true"}, active ? (S.sort.dir > 0 ? " ▲" : " ▼") : "")));
  };
  const t = h("table", {class: "tbl", id: "trials-table"},
    h("caption", {class: "sr-only"}, "Trials of this search; column headers sort"),
    h("thead", {}, h("tr", {}, COLS.map(th))),
    h("tbody", {}, rows.slice(0, 500).map((tr) => h("tr", {"data-trial-id": tr.id, class: `st-row-${tr.state}`},
      COLS.map((c) => h("td", {class: c.num ? "num" : null}, c.show ? c.show(tr) : c.get(tr)))))));
  fill(trialsBox, h("div", {class: "tbl-wrap", tabindex: 0, role: "region", "aria-label": "Trials table"}, t),
    rows.length > 500 ? h("p", {class: "note"}, `showing the first 500 of ${rows.length}; filter to narrow`) : null);
}

// ------------------------------------------------------------------ loading and polling

async function loadAll() {
  const [board, trials, inter] = await Promise.all([
    api(`/searches/${id}/leaderboard`),
    apiAll(`/searches/${id}/trials?sort=created&order=asc`),
    api(`/searches/${id}/intermediate`).catch(() => null),
  ]);
  S.board = board;
  S.trials = trials;
  S.inter = inter;
  renderBoard();
  renderTrials();
  renderHistory();
  renderIntermediate();
  await loadCurves();
}

function signature(d) {
  const p = d.progress;
  return [d.state, p.done, p.running, p.finalists_done, p.complete, p.pruned,
    p.control ? p.control.trials : ""].join("/");
}

async function main() {
  try {
    S.detail = await api(`/searches/${id}`);
  } catch (err) {
    mount(h("h1", {}, `Search #${id}`), errorBox(err, err instanceof ApiError && err.status === 404 ? "not found" : "could not load"));
    return;
  }
  S.color = familyColors(S.detail.spec.families);
  skeleton();
  renderHead();
  await loadAll();
  S.sig = signature(S.detail);
  loadImportance();
  if (TERMINAL.has(S.detail.state) && !analysing(S.detail)) return;
  let lastComplete = S.detail.progress.complete;
  poll(async () => {
    S.detail = await api(`/searches/${id}`);
    renderHead();
    const sig = signature(S.detail);
    if (sig !== S.sig) {
      S.sig = sig;
      await loadAll();
      if (S.detail.progress.complete !== lastComplete || TERMINAL.has(S.detail.state)) {
        lastComplete = S.detail.progress.complete;
        await loadImportance();
      }
    }
    // a complete search is followed until its analysis is done (the header says so)
    return !TERMINAL.has(S.detail.state) || analysing(S.detail);
  });
}

main();
