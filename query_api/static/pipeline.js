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
