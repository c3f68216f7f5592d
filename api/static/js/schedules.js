// Schedules page (/ui/schedules): recurring searches — list, create, pause/resume, delete.
import {$, $$, api, ApiError, badge, errorBox, fmt, h, mount, setTitle} from "./common.js";

setTitle("Schedules");

const listBox = h("div", {id: "schedules-list"});
const msg = h("p", {class: "muted small", "aria-live": "polite", id: "schedules-msg"});

function rowsOf(page) {
  if (Array.isArray(page)) return page;
  return page?.data || [];
}

function templateText(t) {
  if (!t || typeof t !== "object") return "–";
  if (t.kind === "add_trials") return `add ${t.trials} trials to search #${t.search_id}`;
  const s = t.spec || t;
  return `re-run ${s.dataset ?? "?"} · ${s.architecture ?? ""} · ${(s.families || []).join(", ")}` +
    (s.trials ? ` · ${s.trials} trials` : "");
}

async function act(path, method, label) {
  msg.textContent = "";
  try {
    await api(path, {method});
    msg.textContent = label;
  } catch (err) {
    msg.replaceChildren(errorBox(err));
  }
  await refresh();
}

async function refresh() {
  let page;
  try {
    page = await api("/schedules?limit=500");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      listBox.replaceChildren(h("p", {class: "muted", id: "schedules-missing"},
        "This server has no schedules API (GET /schedules answered 404)."));
      return false;
    }
    listBox.replaceChildren(errorBox(err, "could not load schedules"));
    return true;
  }
  const rows = rowsOf(page);
  if (!rows.length) {
    listBox.replaceChildren(h("p", {class: "muted"}, "No schedule yet: create one below."));
    return true;
  }
  const headers = ["#", "Name", "Cron", "State", "Template", "Next run", "Last run", "Last search", "Runs", "Last error", "Actions"];
  listBox.replaceChildren(h("div", {class: "tbl-wrap", tabindex: 0, role: "region", "aria-label": "Schedules table"},
    h("table", {class: "tbl", id: "schedules-table"},
      h("caption", {class: "sr-only"}, "Schedules"),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", {scope: "col"}, x)))),
      h("tbody", {}, rows.map((s) => h("tr", {"data-schedule-id": s.id},
        h("td", {}, s.id), h("td", {}, s.name),
        h("td", {class: "mono"}, s.cron, s.timezone && s.timezone !== "UTC" ? h("span", {class: "sub"}, s.timezone) : null),
        h("td", {}, badge(s.state)),
        h("td", {class: "small"}, templateText(s.template)),
        h("td", {class: "small"}, fmt.date(s.next_run_at)),
        h("td", {class: "small"}, fmt.date(s.last_run_at)),
        h("td", {}, s.last_search_id ? h("a", {href: `/ui/searches/${s.last_search_id}`}, `#${s.last_search_id}`) : "–"),
        h("td", {class: "num"}, s.run_count ?? "–"),
        h("td", {class: "small err-text"}, s.last_error || ""),
        h("td", {class: "actions"},
          s.state === "paused"
            ? h("button", {type: "button", class: "btn small", "aria-label": `Resume schedule ${s.name}`,
              onclick: () => act(`/schedules/${s.id}/resume`, "POST", `Resumed ${s.name}.`)}, "Resume")
            : h("button", {type: "button", class: "btn small", "aria-label": `Pause schedule ${s.name}`,
              onclick: () => act(`/schedules/${s.id}/pause`, "POST", `Paused ${s.name}.`)}, "Pause"),
          h("button", {type: "button", class: "btn small danger", "aria-label": `Delete schedule ${s.name}`,
            onclick: (ev) => {
              const b = ev.currentTarget;
              if (b.dataset.armed) return act(`/schedules/${s.id}`, "DELETE", `Deleted ${s.name}.`);
              b.dataset.armed = "1";
              b.textContent = "Confirm delete";
              setTimeout(() => { delete b.dataset.armed; b.textContent = "Delete"; }, 4000);
            }}, "Delete")),
      ))))));
  return true;
}

function createForm() {
  const kind = h("select", {id: "s-kind", name: "kind"},
    h("option", {value: "rerun"}, "re-run a search spec on the latest dataset version"),
    h("option", {value: "add_trials"}, "add trials to an existing search"));
  const inp = (id, label, attrs = {}) => h("div", {class: "field", "data-field": id},
    h("label", {for: `s-${id}`}, label), h("input", {id: `s-${id}`, name: id, ...attrs}),
    h("p", {class: "field-error", id: `serr-${id}`}));
  const rerun = h("div", {id: "s-rerun"},
    h("div", {class: "row3"},
      inp("dataset", "Dataset (stored name or built-in)", {type: "text", value: "iris", required: true}),
      inp("architecture", "Architecture", {type: "text", value: "mlp:32,32"}),
      inp("families", "Families (comma-separated)", {type: "text", value: "relu,gelu,prelu"})),
    h("div", {class: "row3"},
      inp("trials", "Trials", {type: "number", value: 12, min: 1}),
      inp("epochs", "Epochs", {type: "number", value: 10, min: 1})));
  const add = h("div", {id: "s-add", hidden: true},
    h("div", {class: "row3"},
      inp("search_id", "Search id", {type: "number", min: 1}),
      inp("add_trials", "Trials to add", {type: "number", value: 8, min: 1})));
  kind.addEventListener("change", () => {
    rerun.hidden = kind.value !== "rerun";
    add.hidden = kind.value !== "add_trials";
  });
  const formErr = h("div", {class: "alert error", role: "alert", hidden: true, id: "s-form-error"});
  const form = h("form", {id: "new-schedule", "aria-label": "New schedule", novalidate: true},
    h("div", {class: "row3"},
      inp("name", "Name (optional)", {type: "text", maxlength: 200, placeholder: "nightly iris"}),
      inp("cron", "Cron", {type: "text", required: true, value: "0 3 * * *", spellcheck: "false",
        "aria-describedby": "s-cron-help"}),
      inp("timezone", "Time zone", {type: "text", value: "UTC"})),
    h("p", {class: "help", id: "s-cron-help"}, "minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\" (03:00 daily), or @daily / @hourly."),
    h("div", {class: "field"}, h("label", {for: "s-kind"}, "What each run does"), kind),
    rerun, add, formErr,
    h("div", {class: "actions"}, h("button", {type: "submit", class: "btn primary"}, "Create schedule")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const e of $$(".field-error", form)) e.textContent = "";
    formErr.hidden = true;
    const v = (id) => $(`#s-${id}`, form).value.trim();
    const template = kind.value === "rerun"
      ? {kind: "rerun", spec: {dataset: v("dataset"), architecture: v("architecture") || undefined,
        families: v("families") ? v("families").split(/[\s,]+/).filter(Boolean) : undefined,
        trials: v("trials") ? Number(v("trials")) : undefined, epochs: v("epochs") ? Number(v("epochs")) : undefined}}
      : {kind: "add_trials", search_id: Number(v("search_id")), trials: Number(v("add_trials"))};
    const body = {name: v("name") || undefined, cron: v("cron"), timezone: v("timezone") || "UTC", template};
    try {
      await api("/schedules", {method: "POST", json: body});
      form.reset();
      msg.textContent = `Created ${body.name || "the schedule"}.`;
      await refresh();
    } catch (err) {
      const text = err.message;
      const known = {name: "name", cron: "cron", timezone: "timezone", dataset: "dataset", families: "families",
        architecture: "architecture", trials: kind.value === "rerun" ? "trials" : "add_trials", epochs: "epochs",
        search_id: "search_id"};
      let placed = false;
      for (const e of err.errors || []) {
        const k = (e.loc || []).map(String).reverse().find((p) => p in known);
        if (k) { $(`#serr-${known[k]}`, form).textContent = e.msg; placed = true; }
      }
      if (!placed) {
        const k = Object.keys(known).find((x) => text.toLowerCase().startsWith(x) || text.toLowerCase().includes(`${x}:`));
        if (k) { $(`#serr-${known[k]}`, form).textContent = text; placed = true; }
      }
      if (!placed) { formErr.hidden = false; formErr.textContent = text; }
    }
  });
  return form;
}

mount(h("div", {class: "page-head"}, h("h1", {}, "Schedules")),
  h("section", {class: "card", "aria-labelledby": "sl-h"}, h("h2", {id: "sl-h"}, "Recurring searches"), msg, listBox),
  h("section", {class: "card", "aria-labelledby": "sn-h"}, h("h2", {id: "sn-h"}, "New schedule"), createForm()));
refresh();
