/* The aggregate browser: a campaign's events from the events log (GET /campaigns/{id}/history) and
 * its state as of any version or instant (GET /campaigns/{id}?as_of_version=N), on this origin
 * with the access token in the Authorization header. Admins may read every campaign. */

import * as auth from "./auth.js";
import { $, el, fmtDateTime } from "./format.js";

const MAX_HISTORY_ROWS = 500;

let current = null;  // {id, events}
let request = 0;     // the newest request; older answers are ignored

async function get(path) {
  const send = () => fetch(path, {
    headers: { authorization: "Bearer " + auth.accessToken(), accept: "application/json" },
    cache: "no-store",
  });
  let response = await send();
  if (response.status === 401 && (await auth.rotate())) response = await send();
  let body = null;
  try { body = await response.json(); } catch (err) { /* no body */ }
  return { status: response.status, body: body };
}

function fail(text) {
  const box = $("aggregate-error");
  box.textContent = text;
  box.hidden = !text;
}

export async function openAggregate(id) {
  id = String(id).trim();
  $("aggregate-id").value = id;
  if (!id) return;
  const mine = ++request;
  fail("");
  $("aggregate-title").textContent = "Campaign " + id;
  const { status, body } = await get("/campaigns/" + encodeURIComponent(id) + "/history");
  if (mine !== request) return;
  if (status !== 200) {
    current = null;
    $("aggregate-body").hidden = true;
    fail(status === 404 ? "No campaign has the id " + id + "." : "The query API answered " + status + ". " + ((body && body.detail) || ""));
    return;
  }
  current = { id: id, events: body.items };
  renderHistory();
  $("aggregate-body").hidden = false;
  const last = current.events[current.events.length - 1];
  await showVersion(last.aggregate_version);
}

function renderHistory() {
  const events = current.events;
  const rows = document.createDocumentFragment();
  const shown = events.slice(-MAX_HISTORY_ROWS);
  for (const e of shown) {
    const tr = el("tr");
    tr.dataset.version = e.aggregate_version;
    tr.appendChild(el("td", "num", e.aggregate_version));
    const type = el("td", "event");
    const details = el("details");
    details.appendChild(el("summary", "badge" + (/Deleted$/.test(e.event_type) ? " deleted" : ""), e.event_type));
    details.appendChild(el("pre", "payload", JSON.stringify(e.payload, null, 2)));
    type.appendChild(details);
    tr.appendChild(type);
    const time = el("td", "time", fmtDateTime(e.occurred_at));
    time.title = e.occurred_at;
    tr.appendChild(time);
    const actor = el("td", "actor", e.actor_id || "—");
    if (e.actor_id) actor.title = e.actor_id;
    tr.appendChild(actor);
    const correlation = el("td", "correlation", e.correlation_id);
    correlation.title = e.correlation_id + (e.causation_id ? "\ncaused by " + e.causation_id : "");
    tr.appendChild(correlation);
    const cell = el("td");
    const button = el("button", "button small", "state");
    button.type = "button";
    button.dataset.version = e.aggregate_version;
    button.setAttribute("aria-label", "Show the state as of version " + e.aggregate_version);
    cell.appendChild(button);
    tr.appendChild(cell);
    rows.appendChild(tr);
  }
  $("history").replaceChildren(rows);
  $("history-count").textContent = events.length > shown.length
    ? "last " + shown.length + " of " + events.length
    : String(events.length);
  const select = $("as-of-version");
  const options = document.createDocumentFragment();
  for (const e of events) {
    options.appendChild(el("option", null, "v" + e.aggregate_version + " · " + e.event_type)).value = String(e.aggregate_version);
  }
  select.replaceChildren(options);
}

export async function showVersion(version) {
  if (!current) return;
  version = Number(version);
  const mine = ++request;
  $("as-of-version").value = String(version);
  for (const tr of $("history").children) {
    if (Number(tr.dataset.version) === version) tr.setAttribute("aria-current", "true");
    else tr.removeAttribute("aria-current");
  }
  const event = current.events.find((e) => e.aggregate_version === version);
  const { status, body } = await get("/campaigns/" + encodeURIComponent(current.id) + "?as_of_version=" + version);
  if (mine !== request) return;
  const note = $("as-of-note");
  const state = $("aggregate-state");
  if (status === 200) {
    note.textContent = "As of version " + version + (event ? " · " + event.event_type + " at " + fmtDateTime(event.occurred_at) : "");
    state.textContent = JSON.stringify(body, null, 2);
  } else {
    note.textContent = "Version " + version + ": " + ((body && body.detail) || "the query API answered " + status);
    state.textContent = "";
  }
}

/* The state at an instant: the last version that had happened by then. */
function showInstant(value) {
  if (!current || !value) return;
  const at = new Date(value).getTime();
  let version = null;
  for (const e of current.events) if (Date.parse(e.occurred_at) <= at) version = e.aggregate_version;
  if (version === null) {
    $("as-of-note").textContent = "The campaign did not exist yet at " + value.replace("T", " ") + ".";
    $("aggregate-state").textContent = "";
    return;
  }
  showVersion(version);
}

export function installAggregate() {
  $("aggregate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    openAggregate($("aggregate-id").value);
  });
  $("as-of-version").addEventListener("change", (e) => showVersion(e.target.value));
  $("as-of-time").addEventListener("change", (e) => showInstant(e.target.value));
  $("history").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-version]");
    if (button) showVersion(button.dataset.version);
  });
}

export function forgetAggregate() {
  current = null;
  request += 1;
  $("aggregate-body").hidden = true;
  $("history").replaceChildren();
  $("aggregate-state").textContent = "";
  $("aggregate-id").value = "";
  fail("");
}
