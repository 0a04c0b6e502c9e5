/* The relay and the projections, as their own reports give them (the monitor's status messages). */

import { $, el, fmtAge, fmtValue, humanise } from "./format.js";
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
}
