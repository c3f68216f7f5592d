// Searches page (/): every search with live progress, filtered by state and dataset.
import {api, archText, badge, errorBox, fmt, h, mount, poll, progressBar, SEARCH_STATES,
  TERMINAL} from "./common.js";

const params = new URLSearchParams(location.search);
const filters = {state: params.get("state") || "", dataset_id: params.get("dataset_id") || ""};
const details = new Map();   // search id -> SearchDetail (terminal ones are kept)
const baselines = new Map(); // search id -> best ReLU search-trial value (while running)
let datasets = new Map();

const stateSel = h("select", {id: "f-state", name: "state", "aria-label": "Filter by state"},
  h("option", {value: ""}, "all states"), SEARCH_STATES.map((s) => h("option", {value: s}, s)));
const dataSel = h("select", {id: "f-dataset", name: "dataset_id", "aria-label": "Filter by dataset"},
  h("option", {value: ""}, "all datasets"));
const status = h("p", {class: "muted small", id: "updated", "aria-live": "polite"}, "");
const body = h("tbody", {id: "searches-body"});
const count = h("span", {class: "muted", id: "search-count"});

const HEADERS = [
  ["#", "search id"], ["Search", null], ["State", null], ["Dataset", null],
  ["Architecture", null], ["Progress", "complete / pruned / failed of the trial budget"],
  ["Best", "best validation value: best search trial while running, the final choice's mean over seeds once done"],
  ["Best family", null], ["ReLU baseline", "the tuned ReLU baseline, measured the same way as Best"],
  ["Δ vs ReLU", "Best minus the ReLU baseline"], ["Created", null],
];

function render() {
  const table = h("table", {class: "tbl", id: "searches-table"},
    h("caption", {class: "sr-only"}, "Searches"),
    h("thead", {}, h("tr", {}, HEADERS.map(([t, title]) => h("th", {scope: "col", title}, t)))),
    body);
  mount(
    h("div", {class: "page-head"},
      h("h1", {}, "Searches ", count),
      h("a", {class: "btn primary", href: "/ui/new"}, "New search")),
    h("form", {class: "filters", role: "search", "aria-label": "Filter searches",
      onsubmit: (e) => e.preventDefault()},
    h("label", {for: "f-state"}, "State"), stateSel,
    h("label", {for: "f-dataset"}, "Dataset"), dataSel, status),
    h("div", {class: "tbl-wrap card", tabindex: 0, role: "region", "aria-label": "Searches table"}, table),
  );
  stateSel.value = filters.state;
  const onChange = () => {
    filters.state = stateSel.value;
    filters.dataset_id = dataSel.value;
    const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    refresh();
  };
  stateSel.addEventListener("change", onChange);
  dataSel.addEventListener("change", onChange);
}

async function loadDatasets() {
  try {
    const page = await api("/datasets?limit=500");
    datasets = new Map(page.data.map((d) => [d.id, d]));
    const current = dataSel.value || filters.dataset_id;
    dataSel.replaceChildren(h("option", {value: ""}, "all datasets"),
      page.data.map((d) => h("option", {value: d.id}, `${d.name} v${d.version}`)));
    dataSel.value = current;
  } catch (err) {
    console.warn(err);
  }
}

async function detailOf(row) {
  const cached = details.get(row.id);
  if (cached && TERMINAL.has(cached.state) && cached.state === row.state) return cached;
  const d = await api(`/searches/${row.id}`);
  details.set(row.id, d);
  if (!d.best) {
    // While running: the best ReLU search trial, the baseline so far.
    const relu = await api(`/searches/${row.id}/trials?family=relu&state=complete&phase=search&sort=value&order=desc&limit=1`);
    baselines.set(row.id, relu.data.length ? relu.data[0].value : null);
  }
  return d;
}

function row(d) {
  const tr = rowCells(d);
  [...tr.children].forEach((td, i) => td.setAttribute("data-label", HEADERS[i][0]));
  return tr;
}

function rowCells(d) {
  const p = d.progress;
  const ds = datasets.get(d.dataset_id);
  const final = d.best && d.best.mean !== undefined;
  const best = final ? d.best.mean : p.best_value;
  const bestFamily = final ? d.best.family : p.best_family;
  const base = final ? d.best.baseline_mean : baselines.get(d.id);
  const delta = final ? d.best.delta_vs_baseline
    : (best !== null && best !== undefined && base !== null && base !== undefined ? best - base : null);
  const kind = final ? "final" : "search";
  const link = `/ui/searches/${d.id}`;
  return h("tr", {"data-search-id": d.id, "data-state": d.state},
    h("td", {}, h("a", {href: link}, `#${d.id}`)),
    h("td", {}, h("a", {href: link}, d.name)),
    h("td", {}, badge(d.state), d.error ? h("div", {class: "small err-text", title: d.error}, d.error.slice(0, 80)) : null),
    h("td", {}, ds ? `${ds.name} v${ds.version}` : (d.spec.dataset || `#${d.dataset_id}`)),
    h("td", {class: "mono"}, archText(d.spec.architecture)),
    h("td", {class: "progress-cell"}, progressBar(p)),
    h("td", {class: "num"}, fmt.num(best), best !== null && best !== undefined ? h("span", {class: "sub"}, kind) : null),
    h("td", {}, bestFamily || "–"),
    h("td", {class: "num"}, fmt.num(base)),
    h("td", {class: `num ${delta > 0 ? "pos" : delta < 0 ? "neg" : ""}`},
      final && d.best.family === "relu" ? "baseline" : fmt.signed(delta)),
    h("td", {class: "small"}, fmt.date(d.created_at)),
  );
}

let inflight = false;
async function refresh() {
  if (inflight) return true;
  inflight = true;
  try {
    const q = new URLSearchParams({limit: "100"});
    if (filters.state) q.set("state", filters.state);
    if (filters.dataset_id) q.set("dataset_id", filters.dataset_id);
    const page = await api(`/searches?${q}`);
    if (page.data.some((s) => !datasets.has(s.dataset_id))) await loadDatasets();
    const rows = await Promise.all(page.data.map(detailOf));
    count.textContent = `(${page.count})`;
    if (!rows.length) {
      body.replaceChildren(h("tr", {}, h("td", {colspan: HEADERS.length, class: "empty"},
        filters.state || filters.dataset_id ? "No search matches these filters."
          : ["No searches yet. ", h("a", {href: "/ui/new"}, "Start one"), "."])));
    } else {
      body.replaceChildren(...rows.map(row));
    }
    const active = rows.filter((d) => !TERMINAL.has(d.state)).length;
    status.textContent = `Updated ${new Date().toLocaleTimeString()}` +
      (active ? ` · ${active} active, refreshing every 2 s` : "");
  } catch (err) {
    status.replaceChildren(errorBox(err, "could not refresh"));
  } finally {
    inflight = false;
  }
  return true;
}

render();
await loadDatasets();
await refresh();
poll(refresh);
