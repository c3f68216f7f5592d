// New search form (/ui/new): dataset (upload or choose), architecture, families, budget.
import {$, $$, api, ApiError, fill, h, mount, setTitle} from "./common.js";

setTitle("New search");

const FIELDS = ["dataset", "architecture", "families", "trials", "epochs", "time_budget_s", "batch_size", "name"];
const ALIASES = {dataset_version: "dataset", label: "dataset", task: "dataset", spec: null};

function field(name, label, input, help) {
  const err = h("p", {class: "field-error", id: `err-${name}`, "aria-live": "polite"});
  const helpEl = help ? h("p", {class: "help", id: `help-${name}`}, help) : null;
  input.setAttribute("aria-describedby", [helpEl ? `help-${name}` : null, `err-${name}`].filter(Boolean).join(" "));
  return h("div", {class: "field", "data-field": name},
    h("label", {for: input.id}, label), input, helpEl, err);
}

function clearErrors(form) {
  for (const e of $$(".field-error", form)) e.textContent = "";
  for (const e of $$("[aria-invalid]", form)) e.removeAttribute("aria-invalid");
  $("#form-error").replaceChildren();
  $("#form-error").hidden = true;
}

function showError(form, name, message) {
  const box = $(`#err-${name}`, form);
  if (!box) return false;
  box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
  const input = name === "families" ? $("fieldset.families", form)
    : $(`[name="${name}"]`, form) || $(`#f-${name}`, form);
  if (input) input.setAttribute("aria-invalid", "true");
  return true;
}

/** Put each part of a 422 beside its field: structured `errors` first, else the detail sentence. */
function placeErrors(form, err, fields = FIELDS) {
  const leftover = [];
  const fieldOf = (parts) => {
    for (const p of parts) {
      const k = String(p);
      if (fields.includes(k)) return k;
      if (k in ALIASES && ALIASES[k] && fields.includes(ALIASES[k])) return ALIASES[k];
    }
    return null;
  };
  if (err.errors && err.errors.length) {
    for (const e of err.errors) {
      const f = fieldOf(e.loc || []);
      if (!(f && showError(form, f, e.msg))) leftover.push(`${(e.loc || []).join(".")}: ${e.msg}`);
    }
  } else {
    const text = typeof err.detail === "string" ? err.detail : err.message;
    for (const part of text.replace(/^invalid search spec:\s*/, "").split(/;\s+(?=(?:body\s+)?[a-z_]+(?:\.[\w.]+)?\s*:)/i)) {
      const m = part.match(/^(?:body\s+)?([a-z_]+)(?:\.[\w.]+)?\s*:\s*(.*)$/i);
      let f = m ? fieldOf([m[1]]) : null;
      let msg = m && f ? m[2] : part;
      if (!f) {
        const lower = part.toLowerCase();
        f = fields.find((k) => lower.includes(k.replace(/_/g, " ")) || lower.includes(k)) ||
          (/activation|famil/.test(lower) ? "families" : /architecture|mlp|cnn|width|layer/.test(lower) ? "architecture" : null);
        msg = part;
      }
      if (!(f && fields.includes(f) && showError(form, f, msg))) leftover.push(part);
    }
  }
  if (leftover.length) {
    const box = $("#form-error");
    box.hidden = false;
    box.replaceChildren(leftover.join("; "));
  }
  const first = $("[aria-invalid]", form);
  if (first) (first.matches("fieldset") ? $("input:not([disabled])", first) : first)?.focus();
}

async function loadDatasets(select, selected) {
  const [stored, builtins] = await Promise.all([api("/datasets?latest=true&limit=500"), api("/datasets/builtins")]);
  const storedNames = new Set(stored.data.map((d) => d.name));
  fill(select,
    stored.data.length ? h("optgroup", {label: "Stored datasets"}, stored.data.map((d) =>
      h("option", {value: `stored:${d.name}:${d.version}`},
        `${d.name} v${d.version} — ${d.task}, ${d.n_rows} rows × ${d.n_features} features`))) : null,
    h("optgroup", {label: "Built-in datasets"}, builtins.data.filter((b) => !storedNames.has(b.name)).map((b) =>
      h("option", {value: `builtin:${b.name}`, title: b.description}, `${b.name} — ${b.description}`))),
  );
  if (selected) select.value = selected;
}

async function main() {
  const acts = await api("/activations");
  const datasetSel = h("select", {id: "f-dataset", name: "dataset", required: true});
  const uploadFile = h("input", {type: "file", id: "f-upload", name: "upload", accept: ".csv,.parquet,.pq,.npz"});
  const uploadName = h("input", {type: "text", id: "f-upload-name", name: "upload_name", placeholder: "default: the file's name"});
  const uploadLabel = h("input", {type: "text", id: "f-upload-label", name: "upload_label", placeholder: "label/target/y/class"});
  const uploadTask = h("select", {id: "f-upload-task", name: "upload_task"},
    h("option", {value: ""}, "infer"), h("option", {value: "classification"}, "classification"),
    h("option", {value: "regression"}, "regression"));
  const uploadBtn = h("button", {type: "button", class: "btn", id: "upload-btn"}, "Upload");
  const uploadErr = h("p", {class: "field-error", id: "err-upload", "aria-live": "polite"});
  const uploadOk = h("p", {class: "ok-text", id: "upload-ok", "aria-live": "polite"});

  const famBoxes = acts.data.map((a) => {
    const cb = h("input", {type: "checkbox", name: "families", value: a.name, id: `fam-${a.name}`,
      checked: a.name === "relu", disabled: a.name === "relu"});
    return h("label", {class: `fam${a.trainable ? " trainable" : ""}`, for: `fam-${a.name}`}, cb,
      h("span", {class: "fam-name"}, a.name, a.trainable ? h("span", {class: "tag"}, "trainable") : null,
        a.name === "relu" ? h("span", {class: "tag"}, "baseline, always") : null),
      h("code", {class: "formula"}, a.formula));
  });
  const famErr = h("p", {class: "field-error", id: "err-families", "aria-live": "polite"});
  const num = (nm, value, min, extra = {}) => h("input", {type: "number", id: `f-${nm}`, name: nm, value, min, step: 1, inputmode: "numeric", ...extra});

  const form = h("form", {id: "new-search", novalidate: true, "aria-label": "New search"},
    h("fieldset", {}, h("legend", {}, "Data"),
      field("dataset", "Dataset", datasetSel, "A stored dataset (newest version) or a built-in one."),
      h("details", {class: "upload", id: "upload-box"},
        h("summary", {}, "…or upload a file (CSV, Parquet or NPZ)"),
        h("div", {class: "field"}, h("label", {for: "f-upload"}, "File"), uploadFile),
        h("div", {class: "row3"},
          h("div", {class: "field"}, h("label", {for: "f-upload-name"}, "Name"), uploadName),
          h("div", {class: "field"}, h("label", {for: "f-upload-label"}, "Label column"), uploadLabel),
          h("div", {class: "field"}, h("label", {for: "f-upload-task"}, "Task"), uploadTask)),
        uploadBtn, uploadErr, uploadOk)),
    h("fieldset", {}, h("legend", {}, "Network"),
      field("architecture", "Architecture", h("input", {type: "text", id: "f-architecture", name: "architecture",
        value: "mlp:32,32", required: true, autocomplete: "off", spellcheck: "false"}),
      "mlp:W1,W2,… (hidden widths) or cnn:C1,C2/W (conv channels / head widths).")),
    h("fieldset", {class: "families", "aria-describedby": "err-families"}, h("legend", {}, "Activation families"),
      h("p", {class: "help"}, "ReLU is always tuned alongside as the baseline, with the same budget per family."),
      h("div", {class: "fam-grid"}, famBoxes), famErr),
    h("fieldset", {}, h("legend", {}, "Budget"),
      h("div", {class: "row3"},
        field("trials", "Trials (in all)", num("trials", 24, 1), "Split evenly across the families."),
        field("epochs", "Epochs per trial", num("epochs", 20, 1)),
        field("batch_size", "Batch size", num("batch_size", 64, 1))),
      h("div", {class: "row3"},
        field("time_budget_s", "Time budget (s, optional)", num("time_budget_s", "", 1, {placeholder: "none"})),
        field("name", "Display name (optional)", h("input", {type: "text", id: "f-name", name: "name", maxlength: 200}))),
      h("div", {class: "field"},
        h("label", {for: "f-control"},
          h("input", {type: "checkbox", id: "f-control", name: "control", value: "relu"}),
          " Equal-compute control: also tune ReLU alone with the same compute"),
        h("p", {class: "help"}, "Says whether searching activations helped on this data (about twice the time)."))),
    h("div", {class: "alert error", id: "form-error", role: "alert", hidden: true}),
    h("div", {class: "actions"}, h("button", {type: "submit", class: "btn primary", id: "submit-btn"}, "Start search")),
  );
  await loadDatasets(datasetSel, null);
  if ([...datasetSel.options].some((o) => o.value === "builtin:iris")) datasetSel.value = "builtin:iris";
  mount(h("div", {class: "page-head"}, h("h1", {}, "New search")), h("div", {class: "card"}, form));

  uploadBtn.addEventListener("click", async () => {
    uploadErr.textContent = "";
    uploadOk.textContent = "";
    uploadFile.removeAttribute("aria-invalid");
    if (!uploadFile.files.length) {
      uploadErr.textContent = "choose a file first";
      uploadFile.setAttribute("aria-invalid", "true");
      return;
    }
    const fd = new FormData();
    fd.append("file", uploadFile.files[0]);
    if (uploadName.value.trim()) fd.append("name", uploadName.value.trim());
    if (uploadLabel.value.trim()) fd.append("label", uploadLabel.value.trim());
    if (uploadTask.value) fd.append("task", uploadTask.value);
    uploadBtn.disabled = true;
    uploadBtn.textContent = "Uploading…";
    try {
      const d = await api("/datasets", {method: "POST", body: fd});
      await loadDatasets(datasetSel, `stored:${d.name}:${d.version}`);
      uploadOk.textContent = `Stored ${d.name} v${d.version}: ${d.n_rows} rows, ${d.n_features} features, ${d.task}.`;
    } catch (err) {
      uploadErr.textContent = err.message;
      uploadFile.setAttribute("aria-invalid", "true");
    } finally {
      uploadBtn.disabled = false;
      uploadBtn.textContent = "Upload";
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const body = {};
    const [kind, dname, version] = datasetSel.value.split(":");
    if (!kind) { showError(form, "dataset", "choose a dataset"); return; }
    body.dataset = dname;
    if (kind === "stored" && version) body.dataset_version = Number(version);
    body.architecture = $("#f-architecture").value.trim();
    body.families = $$("input[name=families]:checked", form).map((c) => c.value);
    for (const k of ["trials", "epochs", "batch_size", "time_budget_s"]) {
      const raw = $(`#f-${k}`).value.trim();
      if (raw === "") continue;
      const n = Number(raw);
      if (!Number.isFinite(n)) { showError(form, k, "must be a number"); continue; }
      body[k] = n;
    }
    const name = $("#f-name").value.trim();
    if (name) body.name = name;
    if ($("#f-control").checked) body.control = "relu";
    if ($("[aria-invalid]", form)) return;
    const btn = $("#submit-btn");
    btn.disabled = true;
    btn.textContent = "Submitting…";
    try {
      const created = await api("/searches", {method: "POST", json: body});
      location.assign(`/ui/searches/${created.id}`);
    } catch (err) {
      btn.disabled = false;
      btn.textContent = "Start search";
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) placeErrors(form, err);
      else { const box = $("#form-error"); box.hidden = false; box.textContent = err.message; }
    }
  });
}

main().catch((err) => mount(h("div", {class: "alert error", role: "alert"}, `could not load the form: ${err.message}`)));
