// flowdeck dashboard: webhooks, run graphs, stream ports and rerun.  Uses the helpers of
// app.js (api, el, flash, badge, onSubmit, describe, API, TERMINAL), loaded before it.
"use strict";

function confirmed(button) {
  return !button.dataset.confirm || window.confirm(button.dataset.confirm);
}

function when(iso) {
  return iso ? iso.slice(0, 19).replace("T", " ") : "";
}

// -- webhooks --------------------------------------------------------------------------
function hookState(hook) {
  const cell = el("td", { class: "hook-state" }, hook.enabled
    ? el("span", { class: "badge state-succeeded" }, "enabled")
    : el("span", { class: "badge state-cancelled" }, "disabled"));
  if (!hook.enabled && hook.disabled_reason) cell.append(" (" + hook.disabled_reason + ")");
  return cell;
}

function hookButton(action, label, hook, cls, confirmText) {
  const attrs = { type: "button", class: cls, "data-hook-action": action };
  if (confirmText) attrs["data-confirm"] = confirmText;
  if (action === "deliveries") attrs["aria-expanded"] = "false";
  const hidden = action === "deliveries" ? " of " + hook.url : " " + hook.url;
  return el("button", attrs, label, el("span", { class: "sr-only" }, hidden));
}

function hookRow(hook) {
  const row = el("tr", { "data-hook": hook.id, "data-enabled": String(hook.enabled) },
    el("td", {}, el("code", {}, hook.url)),
    el("td", {}, hook.events.join(", ")),
    el("td", {}, hook.run_id ? el("a", { href: "/runs/" + hook.run_id }, hook.run_id) : "all"),
    hookState(hook),
    el("td", { class: "buttons" },
      hookButton("toggle", hook.enabled ? "Disable" : "Enable", hook, "secondary"),
      hookButton("deliveries", "Deliveries", hook, "secondary"),
      hookButton("delete", "Delete", hook, "danger", "Delete this webhook and its delivery log?")));
  return row;
}

function attemptsList(delivery) {
  if (!delivery.attempts.length) return "none yet";
  return el("ol", { class: "attempts" }, ...delivery.attempts.map((a) =>
    el("li", {}, el("time", { datetime: a.at }, when(a.at)), " ",
      a.status ? "HTTP " + a.status : (a.error || "no answer"),
      a.latency_ms !== null && a.latency_ms !== undefined ? " in " + a.latency_ms + " ms" : "")));
}

async function showDeliveries(hookId, button) {
  const section = document.getElementById("deliveries");
  const page = await api("GET", API + "/webhooks/" + hookId + "/deliveries?limit=50");
  const body = section.querySelector("tbody");
  body.replaceChildren(...page.items.map((d) => el("tr", { "data-delivery": d.id },
    el("td", {}, d.type),
    el("td", {}, badge(d.state)),
    el("td", {}, el("time", { datetime: d.created_at }, when(d.created_at))),
    el("td", {}, attemptsList(d)),
    el("td", {}, el("button", { type: "button", class: "secondary", "data-redeliver": d.id, "data-hook": hookId },
      "Redeliver", el("span", { class: "sr-only" }, " " + d.type))))));
  if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: "5" }, "No deliveries yet.")));
  section.dataset.hook = hookId;
  section.hidden = false;
  document.querySelectorAll("[data-hook-action=deliveries]").forEach((b) => b.setAttribute("aria-expanded", "false"));
  if (button) button.setAttribute("aria-expanded", "true");
}

function initWebhooks() {
  const table = document.getElementById("webhooks");
  onSubmit("webhook-form", async (form) => {
    const events = form.events.value.split(",").map((s) => s.trim()).filter((s) => s);
    const body = { url: form.url.value.trim(), events: events.length ? events : ["*"] };
    if (form.run.value.trim()) body.run_id = form.run.value.trim();
    const hook = await api("POST", API + "/webhooks", body);
    // The secret is in this answer only: show it now, never again.
    document.getElementById("new-secret-value").textContent = hook.secret;
    document.getElementById("new-secret").hidden = false;
    const empty = table.querySelector("tr.empty");
    if (empty) empty.remove();
    table.tBodies[0].prepend(hookRow(hook));
    form.reset();
    form.events.value = "run.*";
  });
  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-hook-action]");
    if (!button) return;
    const row = button.closest("tr[data-hook]");
    const id = row.dataset.hook;
    if (!confirmed(button)) return;
    flash("");
    try {
      const action = button.dataset.hookAction;
      if (action === "toggle") {
        const hook = await api("PATCH", API + "/webhooks/" + id, { enabled: row.dataset.enabled !== "true" });
        const fresh = hookRow(hook);
        row.replaceWith(fresh);
        fresh.querySelector("[data-hook-action=toggle]").focus();
      } else if (action === "delete") {
        await api("DELETE", API + "/webhooks/" + id);
        row.remove();
        document.getElementById("wh-url").focus();  // keep the keyboard somewhere useful
        const section = document.getElementById("deliveries");
        if (section.dataset.hook === id) section.hidden = true;
      } else if (action === "deliveries") {
        await showDeliveries(id, button);
      }
    } catch (err) {
      flash(err.message);
    }
  });
  document.getElementById("deliveries").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-redeliver]");
    if (!button) return;
    flash("");
    try {
      await api("POST", API + "/webhooks/" + button.dataset.hook + "/deliveries/" + button.dataset.redeliver + "/redeliver");
      flash("");
      button.textContent = "Sent again";
      button.disabled = true;
      setTimeout(() => showDeliveries(button.dataset.hook).catch((err) => flash(err.message)), 1500);
    } catch (err) {
      flash(err.message);
    }
  });
}

// -- secrets ---------------------------------------------------------------------------
// A value goes from the form to the API and nowhere else: never shown, kept or logged.
function secretRow(secret) {
  return el("tr", { "data-secret": secret.name },
    el("td", {}, el("code", {}, secret.name)),
    el("td", {}, el("time", { datetime: secret.created_at }, when(secret.created_at))),
    el("td", {}, el("time", { datetime: secret.updated_at }, when(secret.updated_at))),
    el("td", { class: "buttons" },
      el("button", { type: "button", class: "danger", "data-secret-action": "delete",
        "data-confirm": "Delete the secret " + secret.name + "? Steps asking for it will fail." },
      "Delete", el("span", { class: "sr-only" }, " " + secret.name))));
}

function initSecrets() {
  const table = document.getElementById("secrets");
  onSubmit("secret-form", async (form) => {
    const name = form.name.value.trim();
    const secret = await api("PUT", API + "/secrets/" + encodeURIComponent(name), { value: form.value.value });
    form.reset();
    const old = table.querySelector('tr[data-secret="' + CSS.escape(name) + '"]');
    const empty = table.querySelector("tr.empty");
    if (empty) empty.remove();
    if (old) old.replaceWith(secretRow(secret)); else table.tBodies[0].append(secretRow(secret));
    document.getElementById("secret-status").textContent = "Secret " + name + " saved.";
  });
  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-secret-action]");
    if (!button || !confirmed(button)) return;
    const row = button.closest("tr[data-secret]");
    flash("");
    try {
      await api("DELETE", API + "/secrets/" + encodeURIComponent(row.dataset.secret));
      row.remove();
      document.getElementById("secret-name").focus();
      document.getElementById("secret-status").textContent = "Secret " + row.dataset.secret + " deleted.";
    } catch (err) {
      flash(err.message);
    }
  });
}

// -- graphs ----------------------------------------------------------------------------
function initGraphs() {
  const errors = document.getElementById("graph-errors");
  onSubmit("graph-form", async (form) => {
    errors.replaceChildren();
    let body;
    try {
      body = JSON.parse(form.spec.value);
    } catch (err) {
      throw new Error("The graph is not valid JSON: " + err.message);
    }
    body.submit = true;
    try {
      const graph = await api("POST", API + "/graphs", body);
      location.href = "/graphs/" + graph.id;
    } catch (err) {
      const problems = (err.details && err.details.problems) || [];
      errors.append(...problems.map((p) => el("li", {}, (p.where ? p.where + ": " : "") + p.message)));
      throw err;
    }
  });
}

const GRAPH_ACTIONS = {
  pause: (s) => s === "running",
  resume: (s) => s === "paused",
  stop: (s) => ["running", "paused"].includes(s),
  kill: (s) => ["running", "paused", "stopping"].includes(s),
};

function renderGraph(graph) {
  const state = document.getElementById("graph-state");
  state.textContent = graph.state;
  state.className = "badge big state-" + graph.state;
  document.getElementById("graph-counts").textContent =
    Object.entries(graph.counts).map(([k, v]) => v + " " + k).join(", ");
  document.getElementById("graph-error").textContent = graph.error
    ? (graph.error.message || JSON.stringify(graph.error)) : "none";
  document.querySelectorAll("[data-graph-control]").forEach((b) => {
    b.disabled = !GRAPH_ACTIONS[b.dataset.graphControl](graph.state);
  });
  for (const n of graph.nodes) {
    const node = document.querySelector('#dag .node[data-node="' + CSS.escape(n.name) + '"]');
    if (node) {
      node.setAttribute("class", "node state-" + n.state);
      node.querySelector(".st").textContent = n.state;
      node.querySelector("title").textContent = n.name + ": " + n.state;
    }
    const row = document.querySelector('#nodes tr[data-node-row="' + CSS.escape(n.name) + '"]');
    if (row) {
      row.replaceChildren(el("th", { scope: "row" }, n.name), el("td", {}, n.workflow),
        el("td", {}, badge(n.state)),
        el("td", {}, n.run_id ? el("a", { href: "/runs/" + n.run_id }, n.run_id) : ""),
        el("td", {}, n.error || ""));
    }
  }
}

function initGraph() {
  const graph = JSON.parse(document.getElementById("graph-data").textContent);
  const base = API + "/graphs/" + graph.id;
  renderGraph(graph);
  let pending = null;
  const reload = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try { renderGraph(await api("GET", base)); } catch (err) { flash(err.message); }
    }, 100);
  };
  const timeline = document.getElementById("timeline");
  const source = new EventSource(base + "/events");
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    timeline.append(el("li", {}, el("time", { datetime: e.at }, e.at.slice(11, 19)), " ",
      el("strong", {}, e.type), e.actor ? " by " + e.actor : "", " ", describe(e)));
    reload();
  };
  document.querySelectorAll("[data-graph-control]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (!confirmed(button)) return;
      flash("");
      try {
        renderGraph(await api("POST", base + "/" + button.dataset.graphControl));
      } catch (err) {
        flash(err.message);
      }
    });
  });
}

// -- run page: stream ports and rerun ----------------------------------------------------
function followOutput(runId, list) {
  const port = list.dataset.output;
  const status = document.querySelector('[data-output-status="' + CSS.escape(port) + '"]');
  const source = new EventSource(API + "/runs/" + runId + "/outputs/" + encodeURIComponent(port));
  source.onopen = () => (status.textContent = "live");
  source.addEventListener("record", (message) => {
    const r = JSON.parse(message.data);
    list.append(el("li", { "data-offset": String(r.offset) },
      el("span", { class: "type" }, "#" + r.offset + (r.attempt > 1 ? " (attempt " + r.attempt + ")" : "") + " "),
      el("code", {}, JSON.stringify(r.data))));
    renderPort({ name: port, records: r.offset + 1, closed: false });
  });
  source.addEventListener("closed", () => {
    source.close();
    status.textContent = "closed";
    renderPort({ name: port, records: list.children.length, closed: true });
  });
}

function initRunAreas() {
  const run = JSON.parse(document.getElementById("run-data").textContent);
  const base = API + "/runs/" + run.id;
  document.querySelectorAll("ol[data-output]").forEach((list) => followOutput(run.id, list));
  document.querySelectorAll("form.push-form").forEach((form) => {
    const port = form.dataset.port;
    const url = base + "/inputs/" + encodeURIComponent(port);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submitter = event.submitter;
      if (submitter && !confirmed(submitter)) return;
      flash("");
      try {
        if (!submitter || submitter.value === "push") {
          const text = form.records.value.trim();
          if (!text) throw new Error("Write one JSON record a line first.");
          const answer = await api("POST", url, new Blob([text + "\n"]), { "Content-Type": "application/x-ndjson" });
          renderPort({ name: port, records: answer.records, closed: false });
          form.records.value = "";
          form.records.focus();
        } else {
          renderPort(Object.assign({ name: port }, await api("POST", url + "/close")));
          form.querySelectorAll("button, textarea").forEach((b) => (b.disabled = true));
        }
      } catch (err) {
        flash(err.message);
      }
    });
  });
  const rerun = document.getElementById("rerun");
  if (rerun) {
    rerun.addEventListener("click", async () => {
      if (!confirmed(rerun)) return;
      flash("");
      try {
        const fresh = await api("POST", base + "/rerun", {});
        location.href = "/runs/" + fresh.id;
      } catch (err) {
        flash(err.message);
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const init = {
    webhooks: initWebhooks, secrets: initSecrets, graphs: initGraphs, graph: initGraph,
    run: initRunAreas,
  }[document.body.dataset.page];
  if (init) init();
});
