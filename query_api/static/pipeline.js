/* The relay and the projections, as their own reports give them (the monitor's status messages). */

import * as auth from "./auth.js";
import { $, el, fmtAge, fmtDateTime, fmtInt, fmtValue, humanise } from "./format.js";
import { call, problem } from "./operations.js";
import { groupLag, samples } from "./state.js";

const HIDDEN = new Set(["state", "heartbeat_age_seconds", "updated_at", "partitions"]);

function facts(status, extra) {
  const list = el("dl", "facts");
  const add = (key, value) => {
    list.appendChild(el("dt", null, humanise(key)));
    list.appendChild(el("dd", null, fmtValue(value)));
  };
  for (const [key, value] of extra) add(key, value);
  for (const key of Object.keys(status).sort()) if (!HIDDEN.has(key)) add(key, status[key]);
  return list;
}

function card(kind, name, status, extra) {
  const box = el("article", "card pipeline-card");
  box.dataset.name = name;
  const head = el("div", "card-head");
  const title = el("h3", null, name);
  title.prepend(el("span", "kind", kind + " "));
  head.appendChild(title);
  const s = (status && status.state) || "down";
  const pill = el("span", "pill " + s, s);
  head.appendChild(pill);
  box.appendChild(head);
  box.appendChild(facts(status || {}, extra));
  return box;
}

export function renderPipeline() {
  if ($("view-pipeline").hidden || !samples.services) return;
  const s = samples.services;
  const relay = s.relay || { state: "down" };
  $("relay-panel").replaceChildren(
    card("relay", "outbox", relay, [["last report", fmtAge(relay.heartbeat_age_seconds)]]),
  );
  const out = document.createDocumentFragment();
  for (const name of Object.keys(s.projectors).sort()) {
    const p = s.projectors[name];
    const lag = groupLag(name);
    out.appendChild(card("projection", name, p, [
      ["consumer lag", lag === null ? p.lag : lag],
      ["last report", fmtAge(p.heartbeat_age_seconds)],
    ]));
  }
  $("projections-panel").replaceChildren(out);
  if (samples.lag && samples.lag.sampled_at) {
    $("pipeline-age").textContent = "lag sampled " + fmtAge((Date.now() - Date.parse(samples.lag.sampled_at)) / 1000);
  }
}

/* Gaps and repairs, per projection: parked events, gap repairs, and whatever the anti-entropy
 * pass reports (any status field whose name starts with anti_entropy, shown as it comes). */

const GAP_FIELDS = ["aggregates_with_parked_events", "parked_total", "gaps_repaired_total", "gaps_unfillable_total"];

function antiEntropy(status) {
  const keys = Object.keys(status).filter((k) => k.startsWith("anti_entropy")).sort();
  if (!keys.length) return "–";
  return keys.map((k) => humanise(k.slice("anti_entropy".length).replace(/^_/, "") || k) + " " + fmtValue(status[k])).join(" · ");
}

export function renderGaps() {
  if ($("view-gaps").hidden || !samples.services) return;
  const projectors = samples.services.projectors || {};
  const rows = document.createDocumentFragment();
  for (const name of Object.keys(projectors).sort()) {
    const p = projectors[name];
    const tr = el("tr");
    tr.dataset.projection = name;
    tr.appendChild(el("td", null, name));
    for (const key of GAP_FIELDS) {
      const td = el("td", "num", fmtValue(p[key] === undefined ? 0 : p[key]));
      td.dataset.field = key;
      tr.appendChild(td);
    }
    const last = el("td", "mono", p.last_gap || "–");
    last.dataset.field = "last_gap";
    tr.appendChild(last);
    const repairs = el("td", null, antiEntropy(p));
    repairs.dataset.field = "anti_entropy";
    tr.appendChild(repairs);
    rows.appendChild(tr);
  }
  $("gaps").replaceChildren(rows);
  $("gaps-empty").hidden = Object.keys(projectors).length > 0;
  $("gaps-age").textContent = samples.servicesAt ? "reported " + fmtAge((Date.now() - samples.servicesAt) / 1000) : "";
  // The parked events themselves are fetched again when a projector reports a different number.
  if (parkedKey() !== parkedSeen && auth.signedIn()) loadParked();
}

function parkedKey() {
  const projectors = (samples.services && samples.services.projectors) || {};
  return Object.keys(projectors).sort().map((n) => n + ":" + (projectors[n].aggregates_with_parked_events || 0)).join(",");
}

/* The parked events themselves (GET /console/gaps): per projection, each aggregate waiting on a
 * missing version, with the version its read model holds, and the projector's newest repairs.
 * "More" fetches the projection's next page; rows are capped so a tab left open stays small. */

const MAX_PARKED_ROWS = 500;  // aggregates shown per projection at most
let parkedSeen = null;
let loading = null;

export async function loadParked() {
  if (loading) return loading;
  parkedSeen = parkedKey();
  loading = (async () => {
    const { status, body } = await call("/console/gaps");
    const box = $("gaps-error");
    box.hidden = status === 200;
    box.textContent = status === 200 ? "" : problem(status, body);
    if (status !== 200) return;
    const out = document.createDocumentFragment();
    for (const p of body.projections) out.appendChild(parkedCard(p));
    $("parked").replaceChildren(out);
  })();
  try { await loading; } finally { loading = null; }
}

export function forgetParked() {
  parkedSeen = null;
  $("parked").replaceChildren();
}

function parkedCard(p) {
  const box = el("article", "card parked-projection");
  box.dataset.projection = p.projection;
  const head = el("div", "card-head");
  head.appendChild(el("h3", null, p.projection));
  head.appendChild(el("span", "muted", "generation " + p.generation));
  box.appendChild(head);
  const wrap = el("div", "table-wide");
  const table = el("table", "parked");
  const th = el("tr");
  for (const name of ["Aggregate", "Read model at", "Missing", "Parked event", "Ver", "Event time", "Parked since"]) th.appendChild(el("th", null, name));
  table.appendChild(el("thead")).appendChild(th);
  const tbody = el("tbody");
  appendParked(tbody, p.parked);
  table.appendChild(tbody);
  wrap.appendChild(table);
  box.appendChild(wrap);
  const empty = el("p", "empty", "No parked events");
  empty.hidden = p.parked.length > 0;
  box.appendChild(empty);
  if (p.next_cursor) box.appendChild(moreButton(p.projection, p.next_cursor, tbody));
  box.appendChild(repairsList(p.repairs));
  return box;
}

function appendParked(tbody, aggregates) {
  for (const a of aggregates) {
    if (tbody.querySelectorAll("tr.first").length >= MAX_PARKED_ROWS) return;
    const events = a.events.length ? a.events : [{ version: null }];
    events.forEach((e, i) => {
      const tr = el("tr", i === 0 ? "first" : "");
      tr.dataset.aggregate = a.aggregate_id;
      tr.dataset.version = e.version === null ? "" : String(e.version);
      if (i === 0) {
        const who = el("td", "mono", a.aggregate_type + " " + a.aggregate_id);
        who.rowSpan = events.length;
        tr.appendChild(who);
        const at = el("td", "num", a.read_version === null ? "–" : "v" + a.read_version);
        at.rowSpan = events.length;
        at.dataset.field = "read_version";
        tr.appendChild(at);
        const missing = el("td", "mono", a.missing.length ? "v" + a.missing.join(", v") : "–");
        missing.rowSpan = events.length;
        missing.dataset.field = "missing";
        tr.appendChild(missing);
      }
      tr.appendChild(el("td", null, e.event_type || "–"));
      const v = el("td", "num", e.version === null ? "–" : "v" + e.version);
      v.dataset.field = "version";
      tr.appendChild(v);
      tr.appendChild(el("td", null, e.occurred_at ? fmtDateTime(e.occurred_at) : "–"));
      const since = el("td", null, e.parked_at ? fmtDateTime(e.parked_at) : "–");
      since.dataset.field = "parked_at";
      tr.appendChild(since);
      tbody.appendChild(tr);
    });
    if (a.parked_count > a.events.length) {
      const tr = el("tr", "more-parked");
      tr.appendChild(el("td", "muted", "… and " + fmtInt(a.parked_count - a.events.length) + " more parked events of " + a.aggregate_id));
      tr.firstChild.colSpan = 7;
      tbody.appendChild(tr);
    }
  }
}

function moreButton(projection, cursor, tbody) {
  const button = el("button", "button small", "More");
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    const query = "?projection=" + encodeURIComponent(projection) + "&cursor=" + encodeURIComponent(cursor);
    const { status, body } = await call("/console/gaps" + query);
    if (status !== 200) { button.disabled = false; return; }
    const [page] = body.projections;
    appendParked(tbody, page.parked);
    if (page.next_cursor) {
      cursor = page.next_cursor;
      button.disabled = false;
    } else {
      button.remove();
    }
  });
  return button;
}

function repairsList(repairs) {
  const box = el("div", "repairs");
  box.appendChild(el("h4", null, "Recent repairs"));
  if (!repairs.length) {
    box.appendChild(el("p", "empty", "No repair yet"));
    return box;
  }
  const list = el("ul", "repairs-list");
  for (const r of repairs) {
    const li = el("li");
    li.dataset.kind = r.kind;
    li.appendChild(el("span", "muted", (r.at ? fmtDateTime(r.at) : "–") + " "));
    li.appendChild(el("span", "pill " + (r.kind === "gap" ? "stale" : "running"), r.kind));
    li.appendChild(el("span", null, " " + describeRepair(r)));
    list.appendChild(li);
  }
  box.appendChild(list);
  return box;
}

function describeRepair(r) {
  if (r.rebuilt) return "projection rebuilt from the events log (" + fmtInt(r.events) + " events)";
  if (r.kind === "gap") {
    const filled = r.filled && r.filled.length ? "filled v" + r.filled.join(", v") : "nothing filled";
    const lost = r.unfillable && r.unfillable.length ? "; dead-lettered v" + r.unfillable.join(", v") +
      " (missing v" + (r.missing || []).join(", v") + " from the log)" : "";
    return r.aggregate + ": " + filled + lost;
  }
  return r.aggregate + ": v" + r.from_version + " → v" + r.to_version;
}
