/* Campaigns CQRS operator console: the entry module (loaded with <script type="module">).
 *
 * auth.js     the session: sign-in on the command API, tokens in memory, rotation, sign-out
 * login.js    the sign-in form
 * socket.js   the WebSocket feed, its bounded inbox and reconnection
 * state.js    what the live view holds, bounded
 * render.js   the live view (figures, events, processes, lag, dead letters)
 * chart.js    the throughput chart
 * aggregate.js  the aggregate browser and time travel
 * pipeline.js the relay and projections view, and the gaps and repairs view
 * operations.js the dead letters (re-drive, confirmed), verify and rebuild, and the audit trail
 */

import { forgetAggregate, installAggregate, openAggregate } from "./aggregate.js";
import * as auth from "./auth.js";
import { drawChart } from "./chart.js";
import { $, fmtInt } from "./format.js";
import { hideSignIn, installSignIn, showSignIn } from "./login.js";
import { forgetOperations, installOperations, loadAudit, loadDeadLetters, loadLastOperations, loadOperations, showOperation } from "./operations.js";
import { forgetParked, loadParked, renderGaps, renderPipeline } from "./pipeline.js";
import * as render from "./render.js";
import * as socket from "./socket.js";
import * as state from "./state.js";

const VIEWS = ["live", "aggregate", "pipeline", "gaps", "deadletters", "audit"];

function handle(m) {
  switch (m.type) {
    case "ready":
      render.setWorker(m.worker);
      hideSignIn();
      render.setConnection(state.feed.paused ? "paused" : "live", state.feed.paused ? "Connected · paused" : "Live");
      render.renderFooter();
      render.queueRender(drawChart);
      break;
    case "snapshot":
      state.applyServices(m);
      state.applyLag(m.lag, m.dead_letters);
      state.setThroughput(m.throughput);
      renderSamples();
      render.queueRender(drawChart);
      break;
    case "event":
      if (state.receiveEvent(m)) render.queueRender();
      else if (state.feed.paused) render.renderPending();
      break;
    case "lag":
      state.applyLag(m, m.dead_letters);
      renderSamples();
      break;
    case "throughput":
      state.addThroughput(m);
      render.queueRender(drawChart);
      break;
    case "status":
      state.applyServices(m);
      renderSamples();
      break;
    case "operation":
      showOperation(m);
      break;
    case "dropped":
      render.showNotice(fmtInt(m.count) + " messages were skipped: this tab fell behind the feed.");
      break;
  }
}

function renderSamples() {
  render.queueRender(() => {
    render.renderProcesses();
    render.renderLag();
    render.renderDeadLetters();
    renderPipeline();
    renderGaps();
  });
}

function signedOut(message) {
  socket.disconnect();
  setPaused(false);
  state.clear();
  render.refilter();
  render.renderDropped(0);
  forgetAggregate();
  forgetOperations();
  forgetParked();
  showView("live");
  render.setConnection(message ? "error" : "signed-out", message ? "Not connected" : "Signed out");
  showSignIn(message);
}

function forbidden() {
  if (!auth.signedIn()) return;  // told twice (the socket's 4403 and the sign-in's 403)
  const who = auth.email();
  auth.signOut("Signed in as " + who + ", but this account is not an admin: the console needs the admin role " +
    "(campaigns users grant-admin " + who + ").");
}

/* ---------- views ---------- */

function showView(name) {
  for (const view of VIEWS) {
    const selected = view === name;
    $("view-" + view).hidden = !selected;
    const tab = $("tab-" + view);
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  if (name === "live") render.queueRender(drawChart);
  if (name === "pipeline") {
    renderPipeline();
    if (auth.signedIn()) { loadOperations(); loadLastOperations(); }
  }
  if (name === "gaps") {
    renderGaps();
    if (auth.signedIn()) loadParked();
  }
  if (name === "deadletters" && auth.signedIn()) loadDeadLetters();
  if (name === "audit" && auth.signedIn()) loadAudit();
}

function installTabs() {
  const tabs = $("tabs");
  tabs.addEventListener("click", (e) => {
    const tab = e.target.closest("[role=tab]");
    if (tab) showView(tab.dataset.view);
  });
  tabs.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    const at = VIEWS.findIndex((v) => $("tab-" + v).getAttribute("aria-selected") === "true");
    const next = VIEWS[(at + (e.key === "ArrowRight" ? 1 : VIEWS.length - 1)) % VIEWS.length];
    showView(next);
    $("tab-" + next).focus();
    e.preventDefault();
  });
}

/* ---------- controls ---------- */

function setPaused(paused) {
  const button = $("pause");
  button.textContent = paused ? "Resume" : "Pause";
  button.classList.toggle("active", paused);
  button.setAttribute("aria-pressed", String(paused));
  $("paused-banner").hidden = !paused;
  if (socket.connected()) render.setConnection(paused ? "paused" : "live", paused ? "Connected · paused" : "Live");
  if (paused) {
    state.feed.paused = true;
  } else {
    const lost = state.resume();
    render.queueRender();
    if (lost) render.showNotice(fmtInt(lost) + " events arrived while paused beyond what could be held.");
  }
  $("pending-count").textContent = "0";
}

function setAggregateFilter(value) {
  $("filter-aggregate").value = value;
  state.filters.aggregate = value.trim().toLowerCase();
  render.refilter();
}

function init() {
  socket.configure({
    message: handle,
    status: render.setConnection,
    forbidden: forbidden,
    expired: () => signedOut("Your session has expired. Sign in again."),
    dropped: render.renderDropped,
  });
  auth.on("rotated", (token) => { socket.swap(token); render.renderFooter(); });
  auth.on("ended", (reason) => signedOut(reason));
  installSignIn(() => socket.connect(), forbidden);
  installTabs();
  installAggregate();
  installOperations();

  $("sign-out").addEventListener("click", () => auth.signOut(null));
  $("gaps-refresh").addEventListener("click", loadParked);
  $("pause").addEventListener("click", () => setPaused(!state.feed.paused));
  $("resume").addEventListener("click", () => setPaused(false));
  $("filter-type").addEventListener("change", (e) => {
    state.filters.type = e.target.value;
    render.refilter();
  });
  $("filter-aggregate").addEventListener("input", (e) => setAggregateFilter(e.target.value));
  $("clear-filters").addEventListener("click", () => {
    $("filter-type").value = "";
    state.filters.type = "";
    setAggregateFilter("");
  });
  $("events").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (!button) return;
    if (button.dataset.open) {
      showView("aggregate");
      openAggregate(button.dataset.open);
    } else if (button.dataset.filter) {
      setAggregateFilter(button.dataset.filter);
    }
  });
  window.addEventListener("resize", () => render.queueRender(drawChart));
  setInterval(render.renderAges, 1000);
  setInterval(() => render.queueRender(drawChart), 5000);  // the time axis moves on

  showView("live");
  showSignIn();
}

init();
