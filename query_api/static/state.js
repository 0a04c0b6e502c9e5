/* What the live view holds, in small pieces, each bounded: nothing here grows with time. */

export const MAX_EVENTS = 1000;     // kept in memory, newest first
export const MAX_ROWS = 250;        // rendered at once
export const MAX_PENDING = 5000;    // held while paused
export const MAX_DELAYS = 100;      // the delay KPI's window
export const CHART_SPAN_MS = 15 * 60 * 1000;

/* The events: newest first, capped, deduplicated by event id (two sockets overlap while the
 * access token is swapped). `fresh` are the ones added since the last render, oldest first. */
export const feed = {
  events: [],
  ids: new Set(),
  fresh: [],
  paused: false,
  pending: [],
  pendingDropped: 0,
  dropped: 0,  // messages this tab dropped itself because it could not keep up
};

export const filters = { type: "", aggregate: "" };

/* What the server samples and reports. */
export const samples = {
  delays: [],
  throughput: [],
  lag: null,
  deadLetters: null,
  services: null,
  servicesAt: 0,
};

export function matches(m) {
  if (filters.type && m.event_type !== filters.type) return false;
  if (filters.aggregate && String(m.aggregate_id).toLowerCase().indexOf(filters.aggregate) < 0) return false;
  return true;
}

/* One event from the socket: counted in the delay window, then shown or held while paused.
 * Returns true if the events list changed. */
export function receiveEvent(m) {
  if (m.event_id && feed.ids.has(m.event_id)) return false;
  if (typeof m.delay_ms === "number") {
    samples.delays.push(m.delay_ms);
    if (samples.delays.length > MAX_DELAYS) samples.delays.shift();
  }
  if (feed.paused) {
    if (feed.pending.length < MAX_PENDING) feed.pending.push(m);
    else feed.pendingDropped += 1;
    return false;
  }
  addEvents([m]);
  return true;
}

export function addEvents(list) {
  for (const m of list) {
    if (m.event_id) {
      if (feed.ids.has(m.event_id)) continue;
      feed.ids.add(m.event_id);
    }
    feed.events.unshift(m);
    feed.fresh.push(m);
  }
  if (feed.events.length > MAX_EVENTS) {
    for (const old of feed.events.splice(MAX_EVENTS)) feed.ids.delete(old.event_id);
  }
  if (feed.fresh.length > MAX_ROWS) feed.fresh.splice(0, feed.fresh.length - MAX_ROWS);
}

/* Resuming: the held events join the list; returns how many could not be held. */
export function resume() {
  feed.paused = false;
  const held = feed.pending;
  const lost = feed.pendingDropped;
  feed.pending = [];
  feed.pendingDropped = 0;
  if (held.length) addEvents(held);
  return lost;
}

export function applyServices(m) {
  samples.services = {
    relay: m.relay, scheduler: m.scheduler, projectors: m.projectors || {}, workers: m.workers || {},
  };
  samples.servicesAt = Date.now();
}

export function applyLag(lag, deadLetters) {
  if (lag && lag.groups) samples.lag = lag;
  if (deadLetters) samples.deadLetters = deadLetters;
}

export function setThroughput(list) {
  samples.throughput = (list || []).slice();
}

export function addThroughput(sample) {
  const list = samples.throughput;
  if (list.length && list[list.length - 1].at === sample.at) return;  // the same sample, from an overlapping socket
  list.push(sample);
  const cutoff = Date.now() - CHART_SPAN_MS - 60000;
  while (list.length && Date.parse(list[0].at) < cutoff) list.shift();
}

export function groupLag(name) {
  if (!samples.lag) return null;
  for (const g of samples.lag.groups) if (g.name === name) return g.lag;
  return null;
}

/* Forget everything shown (signing out). */
export function clear() {
  feed.events = [];
  feed.ids.clear();
  feed.fresh = [];
  feed.pending = [];
  feed.pendingDropped = 0;
  feed.dropped = 0;
  samples.delays = [];
  samples.throughput = [];
  samples.lag = null;
  samples.deadLetters = null;
  samples.services = null;
  samples.servicesAt = 0;
}
