/* The feed: one WebSocket to /monitor/ws, authenticated by its first message (never the URL).
 *
 * Receiving never waits for rendering: a message is put in a bounded inbox and handled in short
 * slices of time; when the inbox is full, events are dropped and counted (as the server drops
 * for a slow client). When the access token is rotated, a second socket is opened with the new
 * token and the first is closed once the second is ready (the events are deduplicated by id). */

import * as auth from "./auth.js";

const MAX_RETRY_MS = 15000;
const MAX_INBOX = 5000;
const SLICE_MS = 8;

let primary = null;
let successor = null;
let retries = 0;
let reconnectTimer = null;
let countdownTimer = null;
let inbox = [];
let head = 0;
let draining = false;
let dropped = 0;
let handlers = null;

/* message(m), status(kind, text), forbidden(), expired(), dropped(count) */
export function configure(h) { handlers = h; }

export function connected() { return primary !== null; }

export function connect() {
  stopTimers();
  const token = auth.accessToken();
  if (!token) return;
  handlers.status(retries ? "reconnecting" : "connecting", "Connecting…");
  if (primary) retire(primary);
  primary = open(token);
}

/* A new access token: open a second socket with it; it replaces the first once ready. */
export function swap(token) {
  if (!primary) { connect(); return; }
  if (successor) retire(successor);
  successor = open(token);
}

export function disconnect() {
  stopTimers();
  if (successor) retire(successor);
  if (primary) retire(primary);
  primary = successor = null;
  inbox = [];
  head = 0;
  retries = 0;
}

function open(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/monitor/ws");
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: token }));
  ws.onmessage = (e) => receive(ws, e.data);
  ws.onclose = (e) => closed(ws, e);
  return ws;
}

function retire(ws) {
  ws.onmessage = ws.onclose = null;
  try { ws.close(1000, "replaced"); } catch (err) { /* already closed */ }
}

function receive(ws, data) {
  if (inbox.length - head >= MAX_INBOX && data.startsWith('{"type":"event"')) {
    dropped += 1;
    handlers.dropped(dropped);
    return;
  }
  inbox.push([ws, data]);
  if (!draining) {
    draining = true;
    setTimeout(drain, 0);
  }
}

function drain() {
  const until = performance.now() + SLICE_MS;
  while (head < inbox.length && performance.now() < until) {
    const [ws, data] = inbox[head];
    inbox[head++] = undefined;
    if (ws !== primary && ws !== successor) continue;
    let m;
    try { m = JSON.parse(data); } catch (err) { continue; }
    if (m.type === "ready") {
      retries = 0;
      if (ws === successor) {
        retire(primary);
        primary = successor;
        successor = null;
      }
    }
    handlers.message(m);
  }
  if (head >= inbox.length) {
    inbox = [];
    head = 0;
    draining = false;
  } else {
    if (head > 1024) { inbox = inbox.slice(head); head = 0; }
    setTimeout(drain, 0);
  }
}

async function closed(ws, e) {
  if (ws === successor) {
    successor = null;
    if (e.code === 4403) { disconnect(); handlers.forbidden(); }
    return;  // the current socket goes on until its own token expires
  }
  if (ws !== primary) return;
  primary = null;
  if (successor) {  // it takes over as soon as it is ready
    primary = successor;
    successor = null;
    return;
  }
  if (e.code === 4403) {
    handlers.forbidden();
  } else if (e.code === 4401) {
    // The access token expired (a sleeping laptop, a throttled tab): one rotation, then again.
    // A successful rotation reconnects through swap() (the "rotated" listener).
    if (await auth.rotate()) return;
    if (auth.signedIn()) scheduleReconnect("The session could not be renewed");
    else handlers.expired();
  } else {
    scheduleReconnect(e.code === 1013 ? "This tab fell behind the feed" : "Connection lost");
  }
}

function scheduleReconnect(why) {
  stopTimers();
  const wait = Math.min(MAX_RETRY_MS, 1000 * Math.pow(2, retries)) * (0.75 + Math.random() * 0.5);
  retries += 1;
  const until = Date.now() + wait;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    handlers.status("reconnecting", why + " · retrying in " + left + " s");
  };
  tick();
  countdownTimer = setInterval(tick, 500);
  reconnectTimer = setTimeout(() => { stopTimers(); connect(); }, wait);
}

function stopTimers() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
}
