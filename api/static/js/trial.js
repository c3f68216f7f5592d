// Trial page (/ui/trials/{id}): hyperparameters, per-epoch curves, learned activation per layer, fits.
import {api, ApiError, badge, curveLabels, errorBox, fmt, h, isGateCurve, keyValues, mount, pageId, poll, section, setTitle,
  table} from "./common.js";
import {alpha, chart, figure, histAt, linspace, resample, unitCurve} from "./charts.js";

const id = pageId();
const MAX_UNITS = 64;

function epochShade(i, n) {
  // light (early) to dark (late) blue
  const t = n <= 1 ? 1 : i / (n - 1);
  const l = Math.round(78 - 48 * t);
  return `hsl(220, 75%, ${l}%)`;
}

// The search's curve analysis (fits, distillation) runs after its leaderboard is stored.
const analysing = (acts) => ["pending", "running"].includes(acts.analysis?.state);

function noFit(acts) {
  if (analysing(acts)) {
    return h("p", {class: "muted", "data-testid": "analysis-running"}, "analysis running (fits, distillation)…");
  }
  if (acts.analysis?.state === "failed") {
    return h("p", {class: "muted", "data-testid": "no-fit"}, `no fit: the analysis failed (${acts.analysis.error || "no reason recorded"})`);
  }
  return h("p", {class: "muted", "data-testid": "no-fit"}, "no fit yet");
}

function layerCard(acts, layer, trial, labels) {
  const gate = isGateCurve(labels, trial.family);
  const curves = acts.curves.filter((c) => c.layer === layer).sort((a, b) => a.epoch - b.epoch);
  const hists = acts.histograms.filter((x) => x.layer === layer).sort((a, b) => a.epoch - b.epoch);
  const fits = (acts.fits || []).filter((f) => f.layer === undefined || f.layer === layer);
  const units = curves[0].y_shape[0];
  const fig = figure(`Layer ${layer}: ${gate ? "gate response g(u) of the gated unit" : "learned activation"} over epochs (epoch 0 dashed${units > 1 ? `; mean over ${units} units` : ""})`,
    {height: 260, id: `fig-layer-${layer}`});
  const hfig = figure(`Layer ${layer}: pre-activation histogram`, {height: 160, id: `fig-hist-${layer}`});
  const fitBox = h("div", {class: "fits"}, h("h3", {}, "Fitted closed form"),
    fits.length ? table(`Fitted closed forms, layer ${layer}`,
      ["Family", "Parameters", "Fit error", "Epoch"],
      fits.map((f) => h("tr", {},
        h("td", {}, f.family || f.name || f.form || "–", f.formula ? h("div", {class: "small mono"}, f.formula) : null),
        h("td", {class: "small mono"}, Object.entries(f.params || f.parameters || {}).map(([k, v]) => `${k}=${fmt.value(v)}`).join(" ") || "–"),
        h("td", {class: "num"}, fmt.num(f.error ?? f.rmse ?? f.mse ?? null)),
        h("td", {class: "num"}, f.epoch ?? "–"))))
      : noFit(acts));
  const grid = units > 1 ? h("div", {class: "multiples", id: `units-${layer}`,
    "aria-label": `Learned activation of each unit of layer ${layer}`}) : null;
  const card = section(`Layer ${layer}`, {id: `layer-${layer}`, class: "layer"},
    h("div", {class: "grid2"}, h("div", {}, fig, hfig), fitBox),
    grid ? [h("h3", {}, `Per-unit activations (${Math.min(units, MAX_UNITS)} of ${units} units, last epoch solid, epoch 0 dashed)`), grid] : null);
  card.draw = () => {
    const xs = curves.flatMap((c) => c.x).filter((v) => v !== null);
    const g = linspace(Math.min(...xs), Math.max(...xs), 201);
    const series = curves.map((c, i) => ({label: `epoch ${c.epoch}`, color: epochShade(i, curves.length),
      width: i === curves.length - 1 ? 2.5 : 1.5, dash: i === 0 ? [6, 4] : null,
      values: resample(c.x, unitCurve(c.y), g)}));
    chart(fig.host, {x: g, series, xLabel: gate ? "gate pre-activation u" : "pre-activation z",
      yLabel: gate ? "gate response g(u)" : "σ(z)", height: 260,
      aria: `Learned ${trial.family} activation of layer ${layer} at epochs ${curves.map((c) => c.epoch).join(", ")}`});
    const last = hists[hists.length - 1];
    if (last) {
      chart(hfig.host, {x: g, series: [{label: `epoch ${last.epoch}`, color: "#2563eb", step: true, width: 1.5,
        fill: alpha("#2563eb", 0.15), values: histAt(last.hist, last.edges, g)}],
      xLabel: "pre-activation z", yLabel: "density", height: 160,
      aria: `Pre-activation histogram of layer ${layer} at epoch ${last.epoch}; ${fmt.num((last.dead_fraction || 0) * 100, 1)}% dead`});
    } else {
      hfig.hidden = true;
    }
    if (grid) {
      const first = curves[0], end = curves[curves.length - 1];
      const gx = linspace(Math.min(...end.x.filter((v) => v !== null)), Math.max(...end.x.filter((v) => v !== null)), 81);
      for (let u = 0; u < Math.min(units, MAX_UNITS); u++) {
        const cell = h("div", {class: "cell"}, h("div", {class: "cell-label"}, `unit ${u}`));
        const host = h("div", {class: "chart mini"});
        cell.append(host);
        grid.append(cell);
        chart(host, {x: gx, compact: true, height: 80, series: [
          {label: "start", color: "#9ca3af", width: 1, dash: [4, 3], values: resample(first.x, unitCurve(first.y, u), gx)},
          {label: "end", color: "#2563eb", width: 1.5, values: resample(end.x, unitCurve(end.y, u), gx)}],
        aria: `Layer ${layer} unit ${u}: learned activation at epoch ${end.epoch} and epoch ${first.epoch}`});
      }
    }
  };
  return card;
}

// Finalists only: the whole network with distilled activations, and with near-linear layers merged.
function networkSection(net) {
  const size = net.size || {};
  const d = net.distilled || {};
  const row = (label, m, sz, speed, cls = "") => h("tr", {class: cls},
    h("td", {}, label),
    h("td", {class: "num"}, fmt.num(m.validation_after ?? m.validation ?? null)),
    h("td", {class: "num"}, fmt.signed(m.validation_change)),
    h("td", {class: "num"}, fmt.num(m.test_after ?? m.test ?? null)),
    h("td", {class: "num"}, fmt.signed(m.test_change)),
    h("td", {class: "num"}, sz.hidden_layers ?? "–"),
    h("td", {class: "num"}, fmt.int(sz.params)),
    h("td", {class: "num"}, fmt.int(sz.flops)),
    h("td", {class: "num"}, speed));
  const knots = (d.layers || []).map((x) => `L${x.layer}: ${x.knots}`).join(", ");
  const rows = [
    row("learned", net.before || {}, size, "1×"),
    row(`distilled (${knots} knots)`, d, size, d.speedup ? `${fmt.num(d.speedup, 2)}×` : "–"),
  ];
  const merge = net.merge || {};
  for (const m of merge.layers || []) {
    if (m.mergeable) rows.push(row(`layer ${m.layer} merged into the next`, m, m.size_after || {}, "–"));
  }
  if (merge.all && (merge.all.layers || []).length > 1) {
    rows.push(row(`layers ${merge.all.layers.join(", ")} merged`, merge.all, merge.all.size_after || {}, "–"));
  }
  const notes = (merge.layers || []).filter((m) => !m.mergeable).map((m) =>
    h("li", {}, `layer ${m.layer}: ${m.near_linear ? "near-linear but not mergeable: " : ""}${m.reason}`));
  return section("Distilled and merged network", {id: "sec-network"},
    table("Metric of the whole network after distilling its activations and merging near-linear layers",
      ["Variant", "Validation", "Δ", "Test", "Δ", "Hidden layers", "Params", "FLOPs", "Speed-up"],
      rows, {id: "network-table"}),
    notes.length ? h("ul", {class: "small"}, notes) : null,
    h("p", {class: "note"}, `Distilled: every activation replaced by a piecewise-linear copy within ${fmt.num((d.rel_error ?? 0) * 100, 1)}% of its range; speed-up = forward time learned / distilled on a batch of ${d.batch ?? "–"} rows.`));
}

async function main() {
  let trial, acts;
  try {
    trial = await api(`/trials/${id}`);
  } catch (err) {
    mount(h("h1", {}, `Trial ${id}`), errorBox(err, err instanceof ApiError && err.status === 404 ? "not found" : "could not load"));
    return;
  }
  try {
    acts = await api(`/trials/${id}/activations`);
  } catch (err) {
    acts = {curves: [], histograms: [], fits: [], error: err};
  }
  const title = trial.trial_number !== null ? `Trial #${trial.trial_number}` : `Finalist trial (id ${trial.id})`;
  setTitle(`${title} of search ${trial.search_id}`);
  const hp = {...trial.hparams};
  const famParams = trial.family_params && typeof trial.family_params === "object" ? trial.family_params : {};
  const exportLink = h("a", {class: "btn", href: `/searches/${trial.search_id}/export`, download: "", id: "export-link",
    "aria-label": `Download the exported best model of search ${trial.search_id} (zip)`}, "Download exported model");
  const distilledLink = h("a", {class: "btn", href: `/searches/${trial.search_id}/export?activations=distilled`, download: "",
    id: "export-distilled-link", "aria-label": `Download the best model of search ${trial.search_id} with distilled activations (zip)`},
  "…with distilled activations");
  const epochs = trial.epochs || [];
  const lossFig = figure("Loss per epoch", {id: "fig-loss", height: 220});
  const metricFig = figure("Validation metric per epoch", {id: "fig-metric", height: 220});
  const layers = [...new Set(acts.curves.map((c) => c.layer))].sort((a, b) => a - b);
  const labels = await curveLabels();
  const cards = layers.map((l) => layerCard(acts, l, trial, labels));
  const stats = (trial.preact_stats || []);
  const lastStats = layers.map((l) => stats.filter((s) => s.layer === l).sort((a, b) => b.epoch - a.epoch)[0]).filter(Boolean);
  mount(
    h("div", {class: "page-head"},
      h("h1", {}, `${title} `, h("span", {class: "light"}, trial.family), " ", badge(trial.state)),
      h("div", {class: "actions"}, h("a", {class: "btn", href: `/ui/searches/${trial.search_id}`}, `← Search #${trial.search_id}`), exportLink, distilledLink)),
    h("div", {class: "grid2"},
      section("Result", {id: "sec-result"}, keyValues([
        ["Phase", trial.phase],
        ["Validation value", fmt.num(trial.value)],
        ["Best value", fmt.num(trial.best_value)],
        ["Test value", fmt.num(trial.test_value)],
        ["Parameters", fmt.int(trial.n_params)],
        ["FLOPs", fmt.int(trial.flops)],
        ["Seed", trial.seed],
        ["Device", trial.device || "–"],
        ["Duration", fmt.dur(trial.duration_s)],
        trial.source_trial_number !== null ? ["Re-run of", `trial #${trial.source_trial_number}`] : null,
        ["Weights stored", trial.has_weights ? "yes" : "no"],
      ], "Trial result"), trial.error ? h("div", {class: "alert error", role: "alert"}, trial.error) : null,
      h("p", {class: "note"}, "The export is the search's best model (the final choice, best seed), with its activations, scaler and label map.")),
      section("Hyperparameters", {id: "sec-hparams"},
        table("Hyperparameters", ["Name", "Value", "Kind"], [
          ...Object.entries(hp).map(([k, v]) => h("tr", {}, h("td", {class: "mono"}, k), h("td", {class: "num"}, fmt.value(v)), h("td", {}, "training"))),
          h("tr", {}, h("td", {class: "mono"}, "family"), h("td", {}, trial.family), h("td", {}, "activation")),
          ...Object.entries(famParams).map(([k, v]) => h("tr", {}, h("td", {class: "mono"}, k), h("td", {class: "num"}, fmt.value(v)), h("td", {}, "activation"))),
        ], {id: "hparams-table"}))),
    section("Per-epoch curves", {id: "sec-epochs"},
      epochs.length ? h("div", {class: "grid2"}, lossFig, metricFig) : h("p", {class: "muted"}, "No epoch recorded yet.")),
    layers.length ? cards : section("Learned activations", {id: "sec-acts"},
      acts.error ? errorBox(acts.error) : h("p", {class: "muted"}, "No learned curve recorded for this trial.")),
    acts.network ? networkSection(acts.network) : null,
    lastStats.length ? section("Pre-activation statistics (last recorded epoch)", {id: "sec-stats"},
      table("Pre-activation statistics", ["Layer", "Epoch", "Min", "Max", "Mean", "Std", "Dead fraction"],
        lastStats.map((s) => h("tr", {}, [s.layer, s.epoch, fmt.num(s.min), fmt.num(s.max), fmt.num(s.mean), fmt.num(s.std),
          fmt.num(s.dead_fraction)].map((v) => h("td", {class: "num"}, v)))))) : null,
  );
  if (epochs.length) {
    const x = epochs.map((e) => e.epoch);
    chart(lossFig.host, {x, xInt: true, xLabel: "epoch", yLabel: "loss", height: 220,
      aria: `Training and validation loss over ${epochs.length} epochs`,
      series: [{label: "train loss", color: "#2563eb", values: epochs.map((e) => e.train_loss), points: x.length < 3, line: true},
        {label: "val loss", color: "#d97706", values: epochs.map((e) => e.val_loss), points: x.length < 3, line: true}]});
    chart(metricFig.host, {x, xInt: true, xLabel: "epoch", yLabel: "validation metric", height: 220,
      aria: `Validation metric over ${epochs.length} epochs`,
      series: [{label: "val metric", color: "#059669", values: epochs.map((e) => e.val_metric), points: x.length < 3, line: true}]});
  }
  for (const c of cards) c.draw();
  if (analysing(acts)) {
    // the fits and the network analysis appear once the search's analysis is done
    poll(async () => {
      const next = await api(`/trials/${id}/activations`);
      if (analysing(next)) return true;
      await main();
      return false;
    });
  }
}

main();
