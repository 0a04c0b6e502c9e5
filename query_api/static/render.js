/* The live view: key figures, the events table, processes, lag and dead letters. Rendering is
 * coalesced to one pass per animation frame and the events table is updated in place (new rows
 * on top, the oldest beyond MAX_ROWS removed), so a busy feed costs little per event. */

import * as auth from "./auth.js";
import { $, delayLevel, el, fmtAge, fmtClock, fmtDuration, fmtInt, shortTopic } from "./format.js";
import { MAX_ROWS, feed, filters, groupLag, matches, samples } from "./state.js";

let queued = false;
let fullRender = true;
const after = [];  // more renderers for the next frame (the pipeline view, the chart)

export function setConnection(kind, text) {
  $("connection").dataset.state = kind;
  $("connection-text").textContent = text;
}

export function queueRender(more) {
  if (more && after.indexOf(more) < 0) after.push(more);
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    renderEvents();
    renderKpis();
    for (const fn of after.splice(0)) fn();
  });
}

/* The filters changed: rebuild the table from the kept events. */
export function refilter() {
  fullRender = true;
  queueRender();
}

/* ---------- events table ---------- */

function eventRow(m, fresh) {
  const tr = el("tr", fresh ? "fresh" : "");
  tr.dataset.eventId = m.event_id || "";
  const time = el("td", "time", fmtClock(m.occurred_at));
  time.title = "occurred " + m.occurred_at + "\nprojected " + m.projected_at;
  tr.appendChild(time);

  const type = el("td");
  const kind = m.aggregate_type === "user" ? "user" : "campaign";
  type.appendChild(el("span", "badge " + kind + (/Deleted$/.test(m.event_type) ? " deleted" : ""), m.event_type));
  tr.appendChild(type);

  const agg = el("td", "aggregate");
  const wrap = el("div", "agg");
  const link = el("button", "link", m.aggregate_id);
  link.type = "button";
  link.dataset.filter = String(m.aggregate_id);
  link.title = m.aggregate_type + " " + m.aggregate_id + " (show only this aggregate)";
  wrap.appendChild(link);
  if (kind === "campaign") {
    const open = el("button", "open", "history");
    open.type = "button";
    open.dataset.open = String(m.aggregate_id);
    open.setAttribute("aria-label", "Open the history of campaign " + m.aggregate_id);
    wrap.appendChild(open);
  }
  agg.appendChild(wrap);
  tr.appendChild(agg);

  tr.appendChild(el("td", "num", m.aggregate_version));
  const actor = el("td", "actor", m.actor_id || "—");
  if (m.actor_id) actor.title = m.actor_id;
  tr.appendChild(actor);
  const delay = el("td", "num delay " + delayLevel(m.delay_ms), fmtDuration(m.delay_ms));
  delay.title = "from occurred_at to projection";
  tr.appendChild(delay);
  return tr;
}

function renderEvents() {
  const body = $("events");
  if (fullRender) {
    fullRender = false;
    const rows = document.createDocumentFragment();
    let shown = 0;
    for (const m of feed.events) {
      if (shown >= MAX_ROWS) break;
      if (matches(m)) { rows.appendChild(eventRow(m, false)); shown += 1; }
    }
    body.replaceChildren(rows);
  } else if (feed.fresh.length) {
    const rows = document.createDocumentFragment();
    for (let i = feed.fresh.length - 1; i >= 0; i--) {
      if (matches(feed.fresh[i])) rows.appendChild(eventRow(feed.fresh[i], true));
    }
    body.insertBefore(rows, body.firstChild);
    while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
  }
  feed.fresh = [];
  const filtered = filters.type || filters.aggregate;
  let matching = feed.events.length;
  if (filtered) {
    matching = 0;
    for (const m of feed.events) if (matches(m)) matching += 1;
  }
  $("events-count").textContent = filtered
    ? fmtInt(matching) + " of " + fmtInt(feed.events.length)
    : fmtInt(feed.events.length);
  const empty = $("events-empty");
  empty.hidden = matching > 0;
  empty.textContent = feed.events.length ? "No event matches the filters" : "Waiting for events…";
  $("clear-filters").hidden = !filtered;
}

export function renderPending() {
  $("pending-count").textContent = fmtInt(feed.pending.length + feed.pendingDropped);
}

export function renderDropped(count) {
  const box = $("local-dropped");
  box.hidden = !count;
  box.textContent = fmtInt(count) + " dropped by this tab";
  box.title = "Events this tab could not render in time were dropped, as the server drops for a slow client.";
}

/* ---------- KPIs ---------- */

function setKpi(id, value, unit, sub, level) {
  const box = $(id);
  const v = box.querySelector(".kpi-value");
  v.textContent = value;
  if (unit) v.appendChild(el("small", null, unit));
  if (sub !== null && sub !== undefined) box.querySelector(".kpi-sub").textContent = sub;
  if (level) box.dataset.level = level; else delete box.dataset.level;
}

export function renderKpis() {
  const list = samples.throughput;
  if (list.length) {
    const last = list[list.length - 1];
    const cutoff = Date.parse(last.at) - 60000;
    let sum = 0;
    for (let i = list.length - 1; i >= 0 && Date.parse(list[i].at) > cutoff; i--) sum += list[i].published;
    setKpi("kpi-rate", fmtInt(sum), "/min", "now " + last.published_per_second.toFixed(1) + " events/s", "ok");
  }

  if (samples.delays.length) {
    const sorted = samples.delays.slice().sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    const worst = sorted[sorted.length - 1];
    setKpi("kpi-delay", fmtDuration(median), null, "median of " + sorted.length + " · max " + fmtDuration(worst), delayLevel(median));
  }

  if (samples.lag) {
    let total = 0, worstGroup = null;
    for (const g of samples.lag.groups) {
      total += g.lag;
      if (!worstGroup || g.lag > worstGroup.lag) worstGroup = g;
    }
    setKpi("kpi-lag", fmtInt(total), null,
      worstGroup && worstGroup.lag ? "most behind: " + worstGroup.name + " (" + fmtInt(worstGroup.lag) + ")" : "every group is caught up",
      total === 0 ? "ok" : total < 1000 ? "warn" : "bad");
  }

  if (samples.services) {
    const relay = samples.services.relay || {};
    if (relay.state === "down") {
      setKpi("kpi-backlog", "–", null, "no relay is publishing", "bad");
    } else {
      const backlog = relay.backlog || 0;
      setKpi("kpi-backlog", fmtInt(backlog), null,
        relay.last_published_at ? "last published " + fmtClock(relay.last_published_at) : "nothing published yet",
        backlog === 0 ? "ok" : backlog < 1000 ? "warn" : "bad");
    }
  }

  if (samples.deadLetters) {
    let dead = 0;
    for (const t of Object.keys(samples.deadLetters)) dead += samples.deadLetters[t];
    setKpi("kpi-dlq", fmtInt(dead), null, dead ? "inspect the .dlq topics" : "none", dead ? "bad" : "ok");
  }
}

/* ---------- processes, lag, dead letters ---------- */

function processRow(kind, name, status, lag, detail) {
  const tr = el("tr");
  const who = el("td");
  who.appendChild(el("span", "kind", kind));
  who.appendChild(document.createTextNode(name));
  tr.appendChild(who);
  const st = el("td");
  const s = (status && status.state) || "down";
  const pill = el("span", "pill " + s, s);
  if (status && status.heartbeat_age_seconds !== undefined) pill.title = "last report " + fmtAge(status.heartbeat_age_seconds);
  st.appendChild(pill);
  tr.appendChild(st);
  tr.appendChild(el("td", "num", lag === null || lag === undefined ? "–" : fmtInt(lag)));
  const cell = el("td", "detail", detail);
  cell.title = status && status.last_error ? detail + "\n" + status.last_error : detail;
  tr.appendChild(cell);
  return tr;
}

export function renderProcesses() {
  const s = samples.services;
  if (!s) return;
  const rows = document.createDocumentFragment();
  const relay = s.relay || { state: "down" };
  const relayDetail = relay.state === "down"
    ? "no relay holds the lease"
    : "backlog " + fmtInt(relay.backlog) + " · published " + fmtInt(relay.published_total) +
      (relay.lease_holder ? " · " + relay.lease_holder : "");
  rows.appendChild(processRow("relay", "outbox", relay, relay.backlog, relayDetail));
  const sched = s.scheduler || { state: "down" };
  const schedDetail = sched.state === "down"
    ? "no scheduler is running: due transitions wait"
    : "timers " + fmtInt(sched.pending || 0) + (sched.pending_capped ? "+" : "") +
      (sched.counts_deferred && sched.counted_age_seconds !== null
        ? " (counted " + fmtInt(Math.round(sched.counted_age_seconds)) + " s ago: firing a backlog)" : "") +
      (sched.next_due_at ? " · next due " + fmtClock(sched.next_due_at) : " · none due") +
      " · fired " + fmtInt(sched.fired_total || 0) +
      (sched.last_lateness_ms !== null && sched.last_lateness_ms !== undefined
        ? " · lateness " + fmtInt(sched.last_lateness_ms) + " ms" : "") +
      (sched.instances ? " · " + Object.keys(sched.instances).length + " instance(s)" : "");
  rows.appendChild(processRow("scheduler", "timers", sched, sched.overdue, schedDetail));
  for (const name of Object.keys(s.projectors).sort()) {
    const p = s.projectors[name];
    const detail = p.state === "down" && p.heartbeat_age_seconds === null
      ? "has never reported"
      : "applied " + fmtInt(p.applied_total || 0) + " · beat " + fmtAge(p.heartbeat_age_seconds) +
        (p.aggregates_with_parked_events ? " · parked " + fmtInt(p.aggregates_with_parked_events) : "") +
        (p.gaps_repaired_total ? " · gaps filled " + fmtInt(p.gaps_repaired_total) : "") +
        (p.gaps_unfillable_total ? " · \u26a0 gaps unfillable " + fmtInt(p.gaps_unfillable_total) : "") +
        (p.anti_entropy_repairs_total ? " · drift repaired " + fmtInt(p.anti_entropy_repairs_total) : "");
    const lag = groupLag(name);
    rows.appendChild(processRow("projector", name, p, lag === null ? p.lag : lag, detail));
  }
  for (const name of Object.keys(s.workers).sort()) {
    const w = s.workers[name];
    let detail = "not running";
    if (w.outcomes) {
      const parts = Object.keys(w.outcomes).sort().map((k) => k.replace(/_/g, " ") + " " + fmtInt(w.outcomes[k]));
      if (w.retries) parts.push("retries " + fmtInt(w.retries));
      detail = parts.length ? parts.join(" · ") : "idle since start";
      if (w.last_error) detail += " · \u26a0 last error (hover)";
    }
    rows.appendChild(processRow("worker", name, w, groupLag(name), detail));
  }
  $("processes").replaceChildren(rows);
}

export function renderLag() {
  const lag = samples.lag;
  if (!lag || !lag.groups || !lag.groups.length) return;
  const out = document.createDocumentFragment();
  for (const g of lag.groups) {
    const wrap = el("div", "lag-group");
    const title = el("div", "lag-title");
    const left = el("span", null, g.name);
    left.appendChild(el("span", "kind", g.kind));
    left.title = g.group_id;
    title.appendChild(left);
    title.appendChild(el("span", "total" + (g.lag ? "" : " zero"), g.lag ? fmtInt(g.lag) + " behind" : "caught up"));
    wrap.appendChild(title);
    const grid = el("div", "partitions");
    const topics = new Set(g.partitions.map((p) => p.topic));
    for (const p of g.partitions) {
      const cell = el("div", "partition" + (p.lag >= 100 ? " far" : p.lag > 0 ? " behind" : ""));
      const label = (topics.size > 1 ? shortTopic(p.topic).charAt(0) : "p") + p.partition;
      cell.appendChild(el("span", "p", label));
      cell.appendChild(document.createTextNode(fmtInt(p.lag)));
      cell.title = p.topic + " [" + p.partition + "] committed " + (p.committed === null ? "none" : fmtInt(p.committed)) + " of " + fmtInt(p.end);
      grid.appendChild(cell);
    }
    wrap.appendChild(grid);
    out.appendChild(wrap);
  }
  $("lag").replaceChildren(out);
}

export function renderDeadLetters() {
  if (!samples.deadLetters) return;
  const topics = Object.keys(samples.deadLetters).sort();
  if (!topics.length) return;
  const out = document.createDocumentFragment();
  for (const topic of topics) {
    const row = el("div", "dlq");
    row.appendChild(el("span", null, topic));
    const n = samples.deadLetters[topic];
    row.appendChild(el("span", "n " + (n ? "some" : "none"), fmtInt(n)));
    out.appendChild(row);
  }
  $("dead-letters").replaceChildren(out);
}

let worker = null;

export function setWorker(name) { worker = name; }

export function renderAges() {
  if (samples.lag && samples.lag.sampled_at) {
    $("lag-age").textContent = "sampled " + fmtAge((Date.now() - Date.parse(samples.lag.sampled_at)) / 1000);
  }
  if (samples.servicesAt) $("status-age").textContent = "updated " + fmtAge((Date.now() - samples.servicesAt) / 1000);
  renderFooter();
}

export function renderFooter() {
  const parts = [];
  if (auth.email()) parts.push("signed in as " + auth.email());
  if (worker) parts.push("served by worker " + worker);
  const expires = auth.expiresAt();
  if (expires) {
    const left = (expires - Date.now()) / 1000;
    parts.push(left > 0 ? "access token renewed before it expires (in " + (left < 90 ? Math.round(left) + " s" : Math.round(left / 60) + " min") + ")" : "access token expired");
  }
  $("worker").textContent = parts.join(" · ");
}

let noticeTimer = null;

export function showNotice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
}
