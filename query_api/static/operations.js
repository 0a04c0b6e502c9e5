/* The console's actions: the dead letters (listed, re-driven one record or one aggregate at a time,
 * after a confirmation dialog) and the audit trail of every action. Both talk to the query API
 * (/console/...) on this origin with the access token in the Authorization header. A verify or a
 * rebuild (confirmed) is asked for here and run by a projectors process; its progress comes over
 * the monitor socket, and the last of each with its result from the audit. */

import * as auth from "./auth.js";
import { $, el, fmtDateTime, fmtInt, fmtValue, shortTopic } from "./format.js";

export async function call(path, init) {
  const send = () => fetch(path, Object.assign({ cache: "no-store" }, init || {}, {
    headers: Object.assign({ authorization: "Bearer " + auth.accessToken(), accept: "application/json" },
      (init && init.headers) || {}),
  }));
  let response = await send();
  if (response.status === 401 && (await auth.rotate())) response = await send();
  let body = null;
  try { body = await response.json(); } catch (err) { /* no body */ }
  return { status: response.status, body: body };
}

export function problem(status, body) {
  return "The query API answered " + status + ". " + ((body && body.detail) || "");
}

function say(id, text) {
  const box = $(id);
  box.textContent = text || "";
  box.hidden = !text;
}

/* ---------- dead letters ---------- */

export async function loadDeadLetters() {
  say("dlq-error", "");
  $("dlq-refresh").disabled = true;
  const { status, body } = await call("/console/dead-letters");
  $("dlq-refresh").disabled = false;
  if (status !== 200) { say("dlq-error", problem(status, body)); return; }
  const out = document.createDocumentFragment();
  for (const topic of body.topics) out.appendChild(topicCard(topic));
  $("dlq-topics").replaceChildren(out);
}

function topicCard(topic) {
  const box = el("article", "card dlq-topic");
  box.dataset.topic = topic.topic;
  const head = el("div", "card-head");
  head.appendChild(el("h3", null, topic.topic));
  head.appendChild(el("span", "muted", fmtInt(topic.total) + " records · " + fmtInt(topic.pending) +
    " pending · " + fmtInt(topic.redriven) + " re-driven"));
  box.appendChild(head);
  if (!topic.records.length) {
    box.appendChild(el("p", "empty", "No dead letters"));
    return box;
  }
  const wrap = el("div", "table-wide");
  const table = el("table", "dlq");
  const th = el("tr");
  for (const name of ["Record", "Aggregate", "Ver", "Event", "Reason", "Group", "Attempts", "Failed at", ""]) th.appendChild(el("th", null, name));
  table.appendChild(el("thead")).appendChild(th);
  const tbody = el("tbody");
  for (const r of topic.records) {
    const tr = el("tr");
    tr.dataset.ref = r.ref;
    tr.appendChild(el("td", "mono", r.ref.slice(r.ref.lastIndexOf(":", r.ref.lastIndexOf(":") - 1) + 1)));
    tr.appendChild(el("td", "mono", r.aggregate_id || "–"));
    tr.appendChild(el("td", "num", fmtValue(r.aggregate_version)));
    tr.appendChild(el("td", null, r.event_type || "–"));
    const reason = el("td", "reason", r.reason);
    reason.title = r.error_type + ": " + r.reason;
    tr.appendChild(reason);
    tr.appendChild(el("td", "mono", r.consumer_group ? shortGroup(r.consumer_group) : "–"));
    tr.appendChild(el("td", "num", fmtValue(r.attempts)));
    tr.appendChild(el("td", null, r.failed_at ? fmtDateTime(r.failed_at) : "–"));
    const actions = el("td", "actions");
    if (r.redriven) {
      actions.appendChild(el("span", "pill running", "re-driven"));
    } else {
      const one = el("button", "button small", "Re-drive");
      one.type = "button";
      one.dataset.redrive = r.ref;
      actions.appendChild(one);
      if (r.aggregate_id) {
        const all = el("button", "button small ghost", "Whole aggregate");
        all.type = "button";
        all.dataset.topic = topic.topic;
        all.dataset.aggregate = r.aggregate_id;
        actions.appendChild(all);
      }
    }
    tr.appendChild(actions);
    tbody.appendChild(tr);
  }
  table.appendChild(tbody);
  wrap.appendChild(table);
  box.appendChild(wrap);
  return box;
}

function shortGroup(group) {
  return group.slice(group.lastIndexOf(".", group.lastIndexOf(".") - 1) + 1);
}

let pending = null;  // what the dialog asks about: {run: function}

function ask(run, text, title, yes) {
  pending = { run: run };
  $("confirm-title").textContent = title || "Re-drive dead letters?";
  $("confirm-yes").textContent = yes || "Re-drive";
  $("confirm-text").textContent = text;
  $("confirm-dialog").showModal();
}

async function redrive(request) {
  say("dlq-error", "");
  say("dlq-result", "");
  const { status, body } = await call("/console/dead-letters/redrive", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(Object.assign({ confirm: true }, request)),
  });
  if (status === 200) {
    say("dlq-result", "Re-driven: " + fmtInt(body.redriven) + " record" + (body.redriven === 1 ? "" : "s") +
      " produced back" + (body.missing.length ? ", " + body.missing.length + " gone past retention" : "") + ". Audited.");
  } else {
    say("dlq-error", problem(status, body));
  }
  await Promise.all([loadDeadLetters(), loadAudit()]);
}

/* ---------- audit ---------- */

export async function loadAudit() {
  say("audit-error", "");
  const { status, body } = await call("/console/audit");
  if (status !== 200) { say("audit-error", problem(status, body)); return; }
  const rows = document.createDocumentFragment();
  for (const line of body.items) {
    const tr = el("tr");
    tr.dataset.action = line.action;
    tr.dataset.result = line.result;
    tr.appendChild(el("td", null, line.at ? fmtDateTime(line.at) : "–"));
    const who = el("td", null, line.email || line.user_id);
    who.title = line.user_id;
    tr.appendChild(who);
    tr.appendChild(el("td", null, line.action));
    tr.appendChild(el("td", "mono", Object.entries(line.target).filter(([, v]) => v !== null).map(([k, v]) => k + "=" + v).join(" ")));
    tr.appendChild(el("td", "result " + (line.result === "ok" ? "ok" : "bad"), line.result));
    const detail = Object.entries(line.detail).filter(([k]) => k !== "dlq_audit_id").map(([k, v]) => k + " " + fmtValue(v)).join(", ");
    tr.appendChild(el("td", null, detail));
    rows.appendChild(tr);
  }
  $("audit").replaceChildren(rows);
  $("audit-empty").hidden = body.items.length > 0;
}

export function forgetOperations() {
  forgetProjectionOperations();
  $("dlq-topics").replaceChildren();
  $("audit").replaceChildren();
  say("dlq-result", "");
}

export function installOperations() {
  installProjectionOperations();
  $("dlq-refresh").addEventListener("click", loadDeadLetters);
  $("audit-refresh").addEventListener("click", loadAudit);
  $("dlq-topics").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (!button) return;
    if (button.dataset.redrive) {
      const request = { ref: button.dataset.redrive };
      ask(() => redrive(request), "Re-drive the dead letter " + button.dataset.redrive +
        " onto its original topic? Every consumer group reads it again (each applies it at most once).");
    } else if (button.dataset.aggregate) {
      const request = { topic: button.dataset.topic, aggregate: button.dataset.aggregate };
      ask(() => redrive(request),
        "Re-drive every pending dead letter of aggregate " + button.dataset.aggregate + " on " +
        shortTopic(button.dataset.topic) + ", in version order?");
    }
  });
  $("confirm-yes").addEventListener("click", () => $("confirm-dialog").close("confirm"));
  $("confirm-no").addEventListener("click", () => $("confirm-dialog").close("cancel"));
  $("confirm-dialog").addEventListener("close", () => {
    const asked = pending;
    pending = null;
    if ($("confirm-dialog").returnValue === "confirm" && asked) asked.run();
  });
}

/* ---------- projection operations (a verify run by a projectors process) ---------- */

const MAX_OPERATIONS = 20;
const operations = new Map();  // id -> the newest message, newest first in the list

const ENDED = new Set(["ok", "drift", "failed"]);

export function showOperation(m) {
  const known = operations.get(m.id);
  // A late "queued" (the query API's) never hides a projectors process's newer state.
  if (known && m.state === "queued" && known.state !== "queued") return;
  operations.delete(m.id);
  operations.set(m.id, m);
  while (operations.size > MAX_OPERATIONS) operations.delete(operations.keys().next().value);
  renderOperations();
  // Its audit line is complete before the final state is published.
  if (ENDED.has(m.state) && (!known || !ENDED.has(known.state))) loadLastOperations();
}

function describe(op) {
  if (op.state === "queued") return "queued, waiting for a projectors process";
  if (op.state === "running") {
    const p = op.progress || {};
    if (!p.pass) return "running";
    return "running · " + p.pass + " · " + fmtInt(p.done) + (p.expected ? " of " + fmtInt(p.expected) : "") + " events" +
      (p.message ? " · " + p.message : "");
  }
  if (op.state === "failed") return "failed: " + (op.error || "unknown error");
  if (op.kind === "rebuild") return "finished: " + rebuilt(op.result);
  const r = op.result || { projections: [] };
  const parts = r.projections.map((p) => p.projection + (p.matches ? " matches" : " DRIFTS"));
  return (op.state === "ok" ? "finished: no drift" : "finished: drift") + " · " + fmtInt(r.events) + " events · " + parts.join(", ");
}

function rebuilt(r) {
  r = r || { projections: [] };
  const parts = r.projections.map((p) => p.projection + " → " + p.generation + " (" + fmtInt(p.applied) + " applied" +
    (p.parked ? ", " + fmtInt(p.parked) + " parked" : "") + (p.refused ? ", " + fmtInt(p.refused) + " refused" : "") + ")");
  return fmtInt(r.events) + " events · " + parts.join(", ");
}

function verified(r) {
  r = r || { projections: [] };
  return fmtInt(r.events) + " events · " + r.projections.map((p) => p.projection + (p.matches ? " matches" : " DRIFTS")).join(", ");
}

function lastLine(id, line, summary) {
  const box = $(id);
  if (!line) { box.textContent = "none yet"; box.dataset.result = ""; return; }
  box.dataset.result = line.result;
  const result = line.detail && line.detail.result;
  box.textContent = line.result + " · " + (line.finished_at ? fmtDateTime(line.finished_at) : fmtDateTime(line.at)) +
    " · " + (line.email || line.user_id) + " · " + (line.target.projection || "all") +
    (result ? " · " + summary(result) : "");
}

export async function loadLastOperations() {
  const { status, body } = await call("/console/projections/last");
  if (status !== 200) return;
  lastLine("last-verify", body.verify, verified);
  lastLine("last-rebuild", body.rebuild, rebuilt);
}

function renderOperations() {
  const out = document.createDocumentFragment();
  for (const op of Array.from(operations.values()).reverse()) {
    const li = el("li", "operation " + op.state);
    li.dataset.id = op.id;
    li.dataset.state = op.state;
    li.appendChild(el("span", "pill " + (op.state === "ok" ? "running" : op.state === "failed" || op.state === "drift" ? "down" : "stale"), op.state));
    li.appendChild(el("span", null, " " + op.kind + " " + op.projection + " (" + op.source + ") · " + describe(op)));
    li.appendChild(el("span", "muted", " · " + fmtDateTime(op.requested_at)));
    out.appendChild(li);
  }
  $("operations").replaceChildren(out);
}

export async function loadOperations() {
  const { status, body } = await call("/console/operations");
  if (status !== 200) return;
  for (const op of body.items.slice().reverse()) showOperation(op);
}

async function startOperation(kind, projection) {
  say("verify-error", "");
  $("verify-start").disabled = $("rebuild-start").disabled = true;
  const request = { projection: projection, source: "mongo" };
  if (kind === "rebuild") request.confirm = true;
  const { status, body } = await call("/console/projections/" + kind, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(request),
  });
  $("verify-start").disabled = $("rebuild-start").disabled = false;
  if (status !== 202) { say("verify-error", problem(status, body)); return; }
  if (!operations.has(body.id)) {
    showOperation({ id: body.id, kind: kind, projection: projection, source: "mongo",
      state: "queued", requested_at: new Date().toISOString() });
  }
}

export function installProjectionOperations() {
  $("verify-form").addEventListener("submit", (e) => {
    e.preventDefault();
    startOperation("verify", $("verify-projection").value);
  });
  $("rebuild-start").addEventListener("click", () => {
    const projection = $("verify-projection").value;
    ask(() => startOperation("rebuild", projection),
      "Rebuild " + (projection === "all" ? "every projection" : "the " + projection + " projection") +
      " from the events log into a new generation and swap it in? Reads go on from the live generation until the swap.",
      "Rebuild projections?", "Rebuild");
  });
}

export function forgetProjectionOperations() {
  operations.clear();
  $("operations").replaceChildren();
  $("last-verify").textContent = "–";
  $("last-rebuild").textContent = "–";
}
