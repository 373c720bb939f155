// flowdeck dashboard: plain JavaScript, no build step.  Every change goes through the
// HTTP API with the session cookie; unsafe requests echo the CSRF cookie in X-CSRF-Token.
"use strict";

const API = "/api/v1";
const TERMINAL = ["succeeded", "failed", "cancelled", "killed", "system_error"];
const ACTIVE = ["queued", "running", "paused", "stopping"];

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function api(method, path, body, headers) {
  const init = { method, credentials: "same-origin", headers: Object.assign({}, headers || {}) };
  if (!["GET", "HEAD", "OPTIONS"].includes(method)) {
    init.headers["X-CSRF-Token"] = cookie("flowdeck_csrf");
  }
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  // a wrong password on the sign-in page is an answer to show, not a lost session
  if (response.status === 401 && !["login", "register"].includes(document.body.dataset.page)) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("please sign in again");
  }
  const text = await response.text();
  const data = text && (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  if (!response.ok) {
    const err = new Error((data && data.error && data.error.message) || response.statusText);
    err.details = data && data.error ? data.error.details : {};
    throw err;
  }
  return data;
}

function flash(message, ...more) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.replaceChildren(message, ...more);
  box.hidden = !message;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function badge(state) {
  return el("span", { class: "badge state-" + state }, state);
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.floor(s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function onSubmit(id, handler) {
  const form = document.getElementById(id);
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    flash("");
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      await handler(form, event.submitter);
    } catch (err) {
      flash(err.message);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

// -- sign in, register, sign out -------------------------------------------------------
function initLogin() {
  onSubmit("login-form", async (form) => {
    try {
      await api("POST", API + "/auth/login", {
        username: form.username.value, password: form.password.value, cookie: true,
      });
    } catch (err) {
      // the user name stays; the password is typed again
      form.password.value = "";
      form.password.focus();
      throw err;
    }
    location.href = form.dataset.next || "/";
  });
}

function initRegister() {
  onSubmit("register-form", async (form) => {
    const user = await api("POST", API + "/auth/register", {
      username: form.username.value, password: form.password.value,
    });
    if (user.status !== "active") {
      flash("Account created: an administrator must approve it before you can sign in.");
      return;
    }
    await api("POST", API + "/auth/login", {
      username: form.username.value, password: form.password.value, cookie: true,
    });
    location.href = "/";
  });
}

function initLogout() {
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    try {
      await api("POST", API + "/auth/logout");
    } finally {
      location.href = "/login";
    }
  });
}

// -- runs list -------------------------------------------------------------------------
function tickDurations() {
  if (window.flowdeckTimes) window.flowdeckTimes();
  const now = Date.now();
  document.querySelectorAll("#runs tr[data-run]").forEach((row) => {
    const started = row.dataset.started ? Date.parse(row.dataset.started) : null;
    const finished = row.dataset.finished ? Date.parse(row.dataset.finished) : null;
    const cell = row.querySelector(".duration");
    if (cell) cell.textContent = started ? seconds(((finished || now) - started) / 1000) : "";
  });
}

async function reloadRuns(table) {
  // The page itself, fetched again with its query (filters, sort, page): the server
  // renders the rows and the state counts in one place.
  const response = await fetch(location.href, { credentials: "same-origin" });
  if (!response.ok || response.redirected) return;
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  const rows = doc.querySelector("#runs tbody");
  const counts = doc.getElementById("state-counts");
  if (rows) table.tBodies[0].replaceChildren(...rows.childNodes);
  if (counts) document.getElementById("state-counts").replaceChildren(...counts.childNodes);
  tickDurations();
}

function initRuns() {
  const table = document.getElementById("runs");
  const status = document.getElementById("live-status");
  tickDurations();
  setInterval(tickDurations, 1000);
  let pending = null;
  const source = new EventSource(API + "/events?type=run.*");
  source.onopen = () => (status.textContent = "Live updates: on");
  source.onerror = () => (status.textContent = "Live updates: reconnecting…");
  source.onmessage = () => {
    // Any run changed state: refresh the list (coalesced), which keeps filters exact.
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try { await reloadRuns(table); } catch (err) { flash(err.message); }
    }, 150);
  };
}

// -- run page --------------------------------------------------------------------------
const STEP_RANK = ["running", "paused", "failed", "timed_out", "killed", "lost", "cancelled",
  "pending", "succeeded", "cached", "skipped"];

function stepState(instances) {
  // One state for a step drawn once but run as several instances (foreach).
  if (!instances.length) return "pending";
  const states = instances.map((s) => s.state);
  if (states.every((s) => s === states[0])) return states[0];
  return STEP_RANK.find((s) => states.includes(s)) || states[0];
}

function renderSteps(steps, runId) {
  const body = document.querySelector("#steps tbody");
  body.replaceChildren(...steps.map((s) => {
    const log = s.log_tail
      ? el("details", {}, el("summary", {}, "log"), el("pre", {}, s.log_tail))
      : "";
    const q = s.index === null ? "" : "?index=" + s.index;
    const link = "/runs/" + (s.run_id || runId) + "/steps/" + encodeURIComponent(s.name) + q;
    return el("tr", { "data-step-row": s.label },
      el("th", { scope: "row" }, s.attempts ? el("a", { href: link }, s.label) : s.label,
        s.slurm_job ? el("small", { class: "slurm-job" }, " Slurm job " + s.slurm_job) : "",
        s.slurm_state ? el("small", { class: "slurm-state" }, " " + s.slurm_state) : "",
        s.dask_task ? el("small", { class: "dask-task" }, " Dask task " + s.dask_task) : ""),
      el("td", {}, badge(s.state),
        s.slurm_reason ? el("small", { class: "slurm-reason" }, " " + s.slurm_reason) : "",
        s.dask_reason ? el("small", { class: "dask-reason" }, " " + s.dask_reason) : ""),
      el("td", {}, String(s.attempts)),
      el("td", {}, seconds(s.duration_s)),
      el("td", {}, s.exit_code === null ? (s.error || "") : String(s.exit_code)),
      el("td", {}, log));
  }));
  if (!steps.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "No step has started yet.")));
  const byName = {};
  steps.forEach((s) => (byName[s.name] = byName[s.name] || []).push(s));
  document.querySelectorAll("#dag .node").forEach((node) => {
    const state = stepState(byName[node.dataset.step] || []);
    node.setAttribute("class", "node state-" + state);
    node.querySelector(".st").textContent = state;
    node.querySelector("title").textContent = node.dataset.step + ": " + state;
  });
}

function renderStatus(run) {
  const state = document.getElementById("run-state");
  state.textContent = run.state;
  state.className = "badge big state-" + run.state;
  const waiting = document.getElementById("run-waiting");
  if (waiting) waiting.textContent = run.waiting || "no";
  document.getElementById("run-progress").textContent = run.progress.done + "/" + run.progress.total;
  document.getElementById("run-time").textContent = seconds(run.running_s);
  document.getElementById("run-error").textContent = run.error ? (run.error.step ? run.error.step + ": " : "") + run.error.message : "none";
  const allowed = {
    start: run.state === "staged",
    pause: run.state === "running",
    resume: run.state === "paused",
    stop: ["staged", "queued", "running", "paused"].includes(run.state),
    kill: run.state === "staged" || ACTIVE.includes(run.state),
  };
  document.querySelectorAll("[data-control]").forEach((b) => {
    b.disabled = !allowed[b.dataset.control];
  });
  const rerun = document.getElementById("rerun");
  if (rerun) rerun.disabled = !TERMINAL.includes(run.state);
  (run.ports || []).forEach(renderPort);
  // an ended run takes no more records
  document.querySelectorAll(".push-form").forEach((f) => (f.hidden = TERMINAL.includes(run.state)));
}

function renderPort(port) {
  const row = document.querySelector('#ports tr[data-port="' + CSS.escape(port.name) + '"]');
  if (!row) return;
  // A port's count only grows and it never opens again: a status read before a push was
  // answered (a refresh an earlier event scheduled) must not show less than that answer.
  const records = row.querySelector(".port-records");
  records.textContent = String(Math.max(Number(records.textContent) || 0, port.records));
  const closed = row.querySelector(".port-closed");
  closed.textContent = port.closed || closed.textContent === "yes" ? "yes" : "no";
}

function renderProducts(products) {
  const list = document.getElementById("products");
  list.replaceChildren(...products.map((p) =>
    el("li", {}, el("a", { href: p.url, download: "" }, p.name), " (" + p.size + " bytes)")));
  if (!products.length) list.append(el("li", { class: "empty" }, "None yet."));
  document.getElementById("products-zip-p").hidden = !products.length;
}

function describe(e) {
  const parts = Object.entries(e.data || {}).filter(([k]) => k !== "from")
    .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v));
  return parts.join(" ");
}

function initRun() {
  const run = JSON.parse(document.getElementById("run-data").textContent);
  const base = API + "/runs/" + run.id;
  renderStatus(run);
  const refresh = { status: null, steps: null, products: null };
  function later(kind, fn) {
    if (refresh[kind]) return;
    refresh[kind] = setTimeout(async () => {
      refresh[kind] = null;
      try { await fn(); } catch (err) { flash(err.message); }
    }, 100);
  }
  const loadStatus = async () => renderStatus(await api("GET", base));
  const loadSteps = async () => renderSteps(await api("GET", base + "/steps"), run.id);
  const loadProducts = async () => renderProducts(await api("GET", base + "/products"));
  loadSteps().catch((err) => flash(err.message));

  const timeline = document.getElementById("timeline");
  const source = new EventSource(base + "/events");
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    const time = el("time", { datetime: e.at }, e.at.slice(0, 19).replace("T", " ") + " UTC");
    timeline.append(el("li", {}, time, " ", el("strong", {}, e.type),
      e.actor ? " by " + e.actor : "", " ", describe(e)));
    if (e.type.startsWith("run.")) later("status", loadStatus);
    if (e.type.startsWith("step.")) { later("steps", loadSteps); later("status", loadStatus); }
    if (e.type === "product.created" || TERMINAL.includes(e.type.slice(4))) later("products", loadProducts);
    if (e.type.startsWith("run.") && TERMINAL.includes(e.type.slice(4))) later("steps", loadSteps);
  };

  document.querySelectorAll("[data-control]").forEach((button) => {
    button.addEventListener("click", async () => {
      const action = button.dataset.control;
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      flash("");
      try {
        renderStatus(await api("POST", base + "/" + action));
      } catch (err) {
        flash(err.message);
      }
    });
  });
}

// -- new run ---------------------------------------------------------------------------
function fieldValue(field) {
  const type = field.dataset.type;
  const input = field.querySelector("input, select");
  if (!input || input.disabled || input.type === "file") return undefined;
  if (type === "bool") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return undefined;
  if (type === "int") return parseInt(raw, 10);
  if (type === "float") return parseFloat(raw);
  if (type === "array") {
    const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
    const it = field.dataset.items;
    if (it === "int") return items.map((s) => parseInt(s, 10));
    if (it === "float") return items.map(parseFloat);
    if (it === "bool") return items.map((s) => ["true", "yes", "1"].includes(s.toLowerCase()));
    return items;
  }
  return raw;
}

function initNewRun() {
  const chooser = document.getElementById("choose-wf");
  if (chooser) chooser.addEventListener("change", () => chooser.form.submit());
  const progress = document.getElementById("run-progress");
  onSubmit("run-form", async (form, submitter) => {
    const params = {};
    const uploads = [];
    form.querySelectorAll(".field").forEach((field) => {
      const value = fieldValue(field);
      if (value !== undefined) params[field.dataset.input] = value;
      const file = field.querySelector("input[type=file]");
      if (file) for (const f of file.files) uploads.push([field.dataset.input, f]);
    });
    const tags = form.__tags.value.split(",").map((s) => s.trim()).filter((s) => s);
    const body = { workflow: form.dataset.workflow, params };
    if (tags.length) body.tags = tags;
    const executor = form.__executor;
    if (executor && executor.selectedIndex > 0) body.resources = { executor: executor.value };
    progress.textContent = "Creating the run…";
    const run = await api("POST", API + "/runs", body);
    try {
      for (const [input, file] of uploads) {
        progress.textContent = "Uploading " + file.name + "…";
        const q = new URLSearchParams({ filename: file.name });
        await api("PUT", API + "/runs/" + run.id + "/files/" + encodeURIComponent(input) + "?" + q,
          file, { "Content-Type": "application/octet-stream" });
      }
      if (!submitter || submitter.value !== "0") {
        progress.textContent = "Starting…";
        await api("POST", API + "/runs/" + run.id + "/start");
      }
    } catch (err) {
      progress.textContent = "";
      flash(err.message + " — the run stays staged: ", el("a", { href: "/runs/" + run.id }, "open run " + run.id),
        " (fix it there, start it, or kill it).");
      return;
    }
    location.href = "/runs/" + run.id;
  });
}

// -- workflows -------------------------------------------------------------------------
const MEDIA = [[".yaml", "application/yaml"], [".yml", "application/yaml"], [".json", "application/json"],
  [".cwl", "application/yaml"],
  [".zip", "application/zip"], [".tar.gz", "application/gzip"], [".tgz", "application/gzip"]];

function initWorkflows() {
  const errors = document.getElementById("upload-errors");
  onSubmit("upload-form", async (form) => {
    errors.replaceChildren();
    const file = form.file.files[0];
    const match = MEDIA.find(([suffix]) => file.name.toLowerCase().endsWith(suffix));
    if (!match) throw new Error(file.name + ": expected .yaml, .yml, .json, .cwl, .zip, .tar.gz or .tgz");
    const q = new URLSearchParams({ visibility: form.visibility.value, workflow_type: form.workflow_type.value });
    if (form.main.value.trim()) q.set("main", form.main.value.trim());
    if (match[0] === ".cwl") {
      // the server sees only the content: name the workflow after the file
      const stem = file.name.slice(0, -4).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[-._]+|[-._]+$/g, "");
      if (stem) q.set("name", stem.slice(0, 60));
    }
    try {
      const wf = await api("POST", API + "/workflows?" + q, file, { "Content-Type": match[1] });
      flash("");
      location.href = "/workflows?pushed=" + encodeURIComponent(wf.ref);
    } catch (err) {
      const list = el("ul", {}, ...((err.details && err.details.errors) || []).map((p) =>
        el("li", {}, (p.line ? p.line + ":" + p.column + " " : "") + p.path + ": " + p.message)));
      errors.append(list);
      throw err;
    }
  });
}

// -- admin -----------------------------------------------------------------------------
function quotaValue(input) {
  // empty: back to the server's default; sizes take K, M, G, T (powers of 1024)
  const text = input.value.trim();
  if (!text) return null;
  const m = /^([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?$/i.exec(text);
  if (!m) throw new Error(input.name.replace(/_/g, " ") + ": not a number: " + text);
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2].toUpperCase()];
  const value = parseFloat(m[1]) * unit;
  return input.name === "max_cpus" ? value : Math.round(value);
}

function initAdmin() {
  document.querySelectorAll("form.quota").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const body = {};
        form.querySelectorAll("input").forEach((input) => { body[input.name] = quotaValue(input); });
        await api("PUT", API + "/admin/users/" + encodeURIComponent(form.dataset.user) + "/quotas", body);
        location.reload();
      } catch (err) {
        flash(err.message);
      }
    });
  });
  document.querySelectorAll("[data-action][data-user]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      try {
        await api("POST", API + "/admin/users/" + encodeURIComponent(button.dataset.user) + "/" + button.dataset.action);
        location.reload();
      } catch (err) {
        flash(err.message);
      }
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initLogout();
  const init = {
    login: initLogin, register: initRegister, runs: initRuns, run: initRun,
    "new-run": initNewRun, workflows: initWorkflows, admin: initAdmin,
  }[document.body.dataset.page];
  if (init) init();
});
