// flowdeck dashboard: local times, a step's log viewer, API tokens and the events page.
// Plain JavaScript; uses api(), el(), flash() and describe() of app.js.
"use strict";

// -- times: every <time datetime> in the browser's time zone, UTC on hover ----------------
function pad2(n) {
  return String(n).padStart(2, "0");
}

function localText(d) {
  return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
    pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
}

function utcText(d) {
  return d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

function ago(d, now) {
  const s = Math.round((now - d) / 1000);
  const a = Math.abs(s);
  if (a < 45) return "just now";
  let t;
  if (a < 3600) t = Math.round(a / 60) + " min";
  else if (a < 86400) t = Math.round(a / 3600) + " h";
  else t = Math.round(a / 86400) + " d";
  return s < 0 ? "in " + t : t + " ago";
}

function localize(root) {
  const now = Date.now();
  const found = root.matches && root.matches("time[datetime]") ? [root] : [];
  root.querySelectorAll && found.push(...root.querySelectorAll("time[datetime]"));
  for (const t of found) {
    const d = new Date(t.getAttribute("datetime"));
    if (isNaN(d)) continue;
    if (t.classList.contains("rel")) {
      t.textContent = ago(d, now);
      t.title = localText(d) + " (" + ZONE + ") · " + utcText(d);
    } else if (!t.dataset.local) {
      t.textContent = localText(d);
      t.title = utcText(d);
    }
    t.dataset.local = "1";
  }
}

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

// app.js calls this every second on the runs list; relative times are refreshed here.
window.flowdeckTimes = () => localize(document);

function initTimes() {
  localize(document);
  const note = document.getElementById("tz-note");
  if (note) note.textContent = "Times in " + ZONE + " (UTC on hover).";
  new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) {
      if (node.nodeType === 1) localize(node);
    }
  }).observe(document.body, { childList: true, subtree: true });
  setInterval(() => localize(document), 30000);
}

// -- a step's log ----------------------------------------------------------------------
const ENDED_STEP = ["succeeded", "failed", "cancelled", "killed", "skipped", "cached", "timed_out", "lost"];

function initStep() {
  const form = document.getElementById("log-form");
  if (!form) return;
  const pre = document.getElementById("log");
  const status = document.getElementById("log-status");
  const follow = document.getElementById("log-follow");
  const run = form.dataset.run;
  const index = form.dataset.index;
  const base = API + "/runs/" + run;
  const logs = base + "/steps/" + encodeURIComponent(form.dataset.step) + "/logs";
  let offset = 0;
  let ended = form.dataset.ended === "true";
  let busy = false;
  form.querySelectorAll("input[type=radio], select").forEach((input) =>
    input.addEventListener("change", () => form.requestSubmit()));

  async function pull() {
    if (busy) return;
    busy = true;
    try {
      for (;;) {
        const q = new URLSearchParams({
          stream: form.stream.value, attempt: form.attempt.value, index, offset: String(offset),
        });
        const response = await fetch(logs + "?" + q, { credentials: "same-origin" });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          status.textContent = (body.error && body.error.message) || response.statusText;
          return;
        }
        const text = await response.text();
        const next = parseInt(response.headers.get("X-Next-Offset") || String(offset), 10);
        if (text) {
          pre.append(text);
          if (follow.checked) pre.scrollTop = pre.scrollHeight;
        }
        const more = next - offset >= 1 << 20; // a whole chunk: there may be more
        offset = next;
        if (!more) break;
      }
      status.textContent = (offset ? offset + " bytes" : "Empty so far") +
        (ended ? "; the step has ended." : follow.checked ? "; following live…" : ".");
    } finally {
      busy = false;
    }
  }

  async function watchStep() {
    const steps = await api("GET", base + "/steps");
    const me = steps.find((s) => s.name === form.dataset.step && String(s.index === null ? -1 : s.index) === index);
    if (!me) return;
    const badge = document.getElementById("step-state");
    badge.textContent = me.state;
    badge.className = "badge big state-" + me.state;
    document.getElementById("step-attempts").textContent = String(me.attempts);
    if (ENDED_STEP.includes(me.state)) ended = true;
    // following the latest attempt: a retry's new attempt is followed in its turn
    const options = form.attempt.options;
    const onLatest = form.attempt.value === options[options.length - 1].value;
    if (onLatest && me.attempts > options.length) {
      const next = new URL(location.href);
      next.searchParams.set("attempt", String(me.attempts));
      location.assign(next);
    }
  }

  pull().catch((err) => (status.textContent = err.message));
  const timer = setInterval(async () => {
    if (!follow.checked || ended) return;
    try {
      await watchStep();
      await pull();
      if (ended) clearInterval(timer);
    } catch (err) {
      status.textContent = err.message;
    }
  }, 1000);
  follow.addEventListener("change", () => pull().catch((err) => (status.textContent = err.message)));
}

// -- API tokens ------------------------------------------------------------------------
async function reloadPart(selector) {
  const response = await fetch(location.href, { credentials: "same-origin" });
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = doc.querySelector(selector);
  if (fresh) document.querySelector(selector).replaceChildren(...fresh.childNodes);
}

function bindRevoke() {
  document.querySelectorAll("[data-revoke]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (!window.confirm(button.dataset.confirm)) return;
      flash("");
      try {
        await api("DELETE", API + "/auth/tokens/" + encodeURIComponent(button.dataset.revoke));
        await reloadPart("#tokens tbody");
        bindRevoke();
      } catch (err) {
        flash(err.message);
      }
    });
  });
}

function initTokens() {
  bindRevoke();
  onSubmit("token-form", async (form) => {
    const made = await api("POST", API + "/auth/tokens", {
      name: form.name.value.trim(), expires_in_days: parseInt(form.days.value, 10),
    });
    document.getElementById("new-token-value").textContent = made.token;
    document.getElementById("new-token").hidden = false;
    form.name.value = "";
    await reloadPart("#tokens tbody");
    bindRevoke();
  });
}

// -- events ----------------------------------------------------------------------------
function initEvents() {
  const list = document.getElementById("events");
  const status = document.getElementById("live-status");
  const q = new URLSearchParams({ after: list.dataset.after || "0" });
  (list.dataset.type || "").split(",").map((s) => s.trim()).filter((s) => s).forEach((t) => q.append("type", t));
  if (list.dataset.run) q.append("run", list.dataset.run);
  const source = new EventSource(API + "/events?" + q);
  source.onopen = () => (status.textContent = "Live updates: on");
  source.onerror = () => (status.textContent = "Live updates: reconnecting…");
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.append(el("li", { "data-event": String(e.id) },
      el("time", { datetime: e.at }, e.at.slice(0, 19).replace("T", " ") + " UTC"), " ",
      el("strong", {}, e.type), " ",
      e.run_id ? el("a", { href: (e.subject_kind === "graph" ? "/graphs/" : "/runs/") + e.run_id }, e.run_id) : "",
      e.actor ? " by " + e.actor : "", " ", describe(e)));
    while (list.children.length > 1000) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  };
}

document.addEventListener("DOMContentLoaded", () => {
  initTimes();
  const init = { step: initStep, tokens: initTokens, events: initEvents }[document.body.dataset.page];
  if (init) init();
});
