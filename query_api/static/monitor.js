/* Campaigns CQRS live monitor: one WebSocket (/monitor/ws), rendered with plain DOM and a canvas.
 *
 * The admin token is kept in sessionStorage (this tab only) and sent as the socket's first
 * message. Every value from the server is written with textContent, never as HTML.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "campaigns.monitor.token";
  var MAX_EVENTS = 1000;        // kept in memory, newest first
  var MAX_ROWS = 250;           // rendered at once
  var MAX_PENDING = 5000;       // held while paused
  var CHART_SPAN_MS = 15 * 60 * 1000;
  var MAX_RETRY_MS = 15000;

  var state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    ws: null,
    worker: null,
    expiresAt: null,
    retries: 0,
    reconnectTimer: null,
    paused: false,
    pending: [],
    pendingDropped: 0,
    events: [],
    fresh: new Set(),
    delays: [],
    throughput: [],
    lag: null,
    deadLetters: null,
    services: null,
    servicesAt: 0,
    filterType: "",
    filterAggregate: "",
    renderQueued: false,
    noticeTimer: null,
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmtInt(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || isNaN(ms)) return "–";
    if (ms < 1000) return Math.max(0, Math.round(ms)) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    return Math.round(ms / 60000) + " min";
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    if (seconds < 1) return "just now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function fmtClock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return "–";
    var pad = function (n, w) { return String(n).padStart(w || 2, "0"); };
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function shortTopic(topic) {
    var parts = String(topic).split(".");
    var i = parts.lastIndexOf("events");
    return i > 0 ? parts[i - 1] : topic;
  }

  function delayLevel(ms) {
    if (ms === null || ms === undefined) return "";
    return ms < 500 ? "ok" : ms < 3000 ? "warn" : "bad";
  }

  /* ---------- connection ---------- */

  function setConnection(kind, text) {
    var box = $("connection");
    box.dataset.state = kind;
    $("connection-text").textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token) { showSignIn(); return; }
    setConnection(state.retries ? "reconnecting" : "connecting", "Connecting…");
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(scheme + "//" + location.host + "/monitor/ws");
    state.ws = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: "auth", token: state.token }));
    };
    ws.onmessage = function (e) {
      var message;
      try { message = JSON.parse(e.data); } catch (err) { return; }
      handle(message);
    };
    ws.onclose = function (e) { closed(ws, e); };
  }

  function closed(ws, e) {
    if (ws !== state.ws) return;  // an old socket, replaced or closed on purpose
    state.ws = null;
    if (e.code === 4401) {
      forgetToken("The token is invalid or has expired. Paste a new one.");
    } else if (e.code === 4403) {
      forgetToken("This account is not an admin: the monitor needs the admin role.");
    } else {
      scheduleReconnect(e.code === 1013 ? "This tab fell behind the feed" : "Connection lost");
    }
  }

  function scheduleReconnect(why) {
    var wait = Math.min(MAX_RETRY_MS, 1000 * Math.pow(2, state.retries)) * (0.75 + Math.random() * 0.5);
    state.retries += 1;
    var until = Date.now() + wait;
    var tick = function () {
      var left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      setConnection("reconnecting", why + " · retrying in " + left + " s");
    };
    tick();
    clearTimeout(state.reconnectTimer);
    var countdown = setInterval(tick, 500);
    state.reconnectTimer = setTimeout(function () { clearInterval(countdown); connect(); }, wait);
  }

  function disconnect() {
    clearTimeout(state.reconnectTimer);
    var ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "signed out");
  }

  function forgetToken(reason) {
    disconnect();
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(reason);
  }

  /* ---------- views ---------- */

  function showSignIn(error) {
    $("console").hidden = true;
    $("sign-in").hidden = false;
    $("sign-out").hidden = true;
    $("pause").disabled = true;
    $("connect").disabled = false;
    $("connect").textContent = "Connect";
    setConnection(error ? "error" : "signed-out", error ? "Not connected" : "Signed out");
    var box = $("sign-in-error");
    box.hidden = !error;
    box.textContent = error || "";
    $("token").focus();
  }

  function showConsole() {
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("sign-out").hidden = false;
    $("pause").disabled = false;
    drawChart();
  }

  /* ---------- messages ---------- */

  function handle(m) {
    switch (m.type) {
      case "ready":
        state.retries = 0;
        state.worker = m.worker;
        state.expiresAt = m.expires_at ? m.expires_at * 1000 : null;
        showConsole();
        setConnection(state.paused ? "paused" : "live", state.paused ? "Connected · paused" : "Live");
        renderFooter();
        break;
      case "snapshot":
        applyServices(m);
        applyLag(m.lag, m.dead_letters);
        state.throughput = (m.throughput || []).slice();
        renderKpis();
        drawChart();
        break;
      case "event":
        onEvent(m);
        break;
      case "lag":
        applyLag(m, m.dead_letters);
        renderKpis();
        break;
      case "throughput":
        state.throughput.push(m);
        var cutoff = Date.now() - CHART_SPAN_MS - 60000;
        while (state.throughput.length && Date.parse(state.throughput[0].at) < cutoff) state.throughput.shift();
        renderKpis();
        drawChart();
        break;
      case "status":
        applyServices(m);
        renderKpis();
        break;
      case "dropped":
        showNotice(fmtInt(m.count) + " messages were skipped: this tab fell behind the feed.");
        break;
    }
  }

  function applyServices(m) {
    state.services = {
      relay: m.relay, scheduler: m.scheduler, projectors: m.projectors || {}, workers: m.workers || {}
    };
    state.servicesAt = Date.now();
    renderProcesses();
  }

  function applyLag(lag, deadLetters) {
    if (lag && lag.groups) state.lag = lag;
    if (deadLetters) state.deadLetters = deadLetters;
    renderLag();
    renderDeadLetters();
    renderProcesses();
  }

  function onEvent(m) {
    if (typeof m.delay_ms === "number") {
      state.delays.push(m.delay_ms);
      if (state.delays.length > 100) state.delays.shift();
    }
    if (state.paused) {
      if (state.pending.length < MAX_PENDING) state.pending.push(m);
      else state.pendingDropped += 1;
      $("pending-count").textContent = fmtInt(state.pending.length + state.pendingDropped);
      return;
    }
    addEvents([m]);
  }

  function addEvents(list) {
    for (var i = 0; i < list.length; i++) {
      state.events.unshift(list[i]);
      state.fresh.add(list[i]);
    }
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    queueRender();
  }

  function queueRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(function () {
      state.renderQueued = false;
      renderEvents();
      renderKpis();
    });
  }

  /* ---------- events table ---------- */

  function matches(m) {
    if (state.filterType && m.event_type !== state.filterType) return false;
    if (state.filterAggregate && String(m.aggregate_id).toLowerCase().indexOf(state.filterAggregate) < 0) return false;
    return true;
  }

  function eventRow(m) {
    var tr = el("tr", state.fresh.has(m) ? "fresh" : "");
    tr.dataset.eventId = m.event_id || "";
    var time = el("td", "time", fmtClock(m.occurred_at));
    time.title = "occurred " + m.occurred_at + "\nprojected " + m.projected_at;
    tr.appendChild(time);

    var type = el("td");
    var kind = m.aggregate_type === "user" ? "user" : "campaign";
    var badge = el("span", "badge " + kind + (/Deleted$/.test(m.event_type) ? " deleted" : ""), m.event_type);
    type.appendChild(badge);
    tr.appendChild(type);

    var agg = el("td", "aggregate");
    var link = el("button", "link", m.aggregate_id);
    link.type = "button";
    link.title = m.aggregate_type + " " + m.aggregate_id + " (show only this aggregate)";
    link.addEventListener("click", function () { setAggregateFilter(String(m.aggregate_id)); });
    agg.appendChild(link);
    tr.appendChild(agg);

    tr.appendChild(el("td", "num", m.aggregate_version));
    var actor = el("td", "actor", m.actor_id || "—");
    if (m.actor_id) actor.title = m.actor_id;
    tr.appendChild(actor);
    var delay = el("td", "num delay " + delayLevel(m.delay_ms), fmtDuration(m.delay_ms));
    delay.title = "from occurred_at to projection";
    tr.appendChild(delay);
    return tr;
  }

  function renderEvents() {
    var body = $("events");
    var shown = 0;
    var matching = 0;
    var rows = document.createDocumentFragment();
    for (var i = 0; i < state.events.length; i++) {
      var m = state.events[i];
      if (!matches(m)) continue;
      matching += 1;
      if (shown < MAX_ROWS) { rows.appendChild(eventRow(m)); shown += 1; }
    }
    body.replaceChildren(rows);
    state.fresh.clear();
    var filtered = state.filterType || state.filterAggregate;
    $("events-count").textContent = filtered
      ? fmtInt(matching) + " of " + fmtInt(state.events.length)
      : fmtInt(state.events.length);
    var empty = $("events-empty");
    empty.hidden = matching > 0;
    empty.textContent = state.events.length ? "No event matches the filters" : "Waiting for events…";
    $("clear-filters").hidden = !filtered;
  }

  function setAggregateFilter(value) {
    $("filter-aggregate").value = value;
    state.filterAggregate = value.trim().toLowerCase();
    renderEvents();
  }

  /* ---------- KPIs ---------- */

  function setKpi(id, value, unit, sub, level) {
    var box = $(id);
    var v = box.querySelector(".kpi-value");
    v.textContent = value;
    if (unit) v.appendChild(el("small", null, unit));
    if (sub !== null && sub !== undefined) box.querySelector(".kpi-sub").textContent = sub;
    if (level) box.dataset.level = level; else delete box.dataset.level;
  }

  function renderKpis() {
    var samples = state.throughput;
    if (samples.length) {
      var last = samples[samples.length - 1];
      var cutoff = Date.parse(last.at) - 60000;
      var sum = 0;
      for (var i = samples.length - 1; i >= 0 && Date.parse(samples[i].at) > cutoff; i--) sum += samples[i].published;
      setKpi("kpi-rate", fmtInt(sum), "/min", "now " + last.published_per_second.toFixed(1) + " events/s", "ok");
    }

    if (state.delays.length) {
      var sorted = state.delays.slice().sort(function (a, b) { return a - b; });
      var median = sorted[Math.floor(sorted.length / 2)];
      var worst = sorted[sorted.length - 1];
      var level = delayLevel(median);
      setKpi("kpi-delay", fmtDuration(median), null, "median of " + sorted.length + " · max " + fmtDuration(worst), level);
    }

    if (state.lag) {
      var total = 0, worstGroup = null;
      state.lag.groups.forEach(function (g) {
        total += g.lag;
        if (!worstGroup || g.lag > worstGroup.lag) worstGroup = g;
      });
      var lagLevel = total === 0 ? "ok" : total < 1000 ? "warn" : "bad";
      setKpi("kpi-lag", fmtInt(total), null,
        worstGroup && worstGroup.lag ? "most behind: " + worstGroup.name + " (" + fmtInt(worstGroup.lag) + ")" : "every group is caught up",
        lagLevel);
    }

    if (state.services) {
      var relay = state.services.relay || {};
      if (relay.state === "down") {
        setKpi("kpi-backlog", "–", null, "no relay is publishing", "bad");
      } else {
        var backlog = relay.backlog || 0;
        setKpi("kpi-backlog", fmtInt(backlog), null,
          relay.last_published_at ? "last published " + fmtClock(relay.last_published_at) : "nothing published yet",
          backlog === 0 ? "ok" : backlog < 1000 ? "warn" : "bad");
      }
    }

    if (state.deadLetters) {
      var dead = 0;
      Object.keys(state.deadLetters).forEach(function (t) { dead += state.deadLetters[t]; });
      setKpi("kpi-dlq", fmtInt(dead), null, dead ? "inspect the .dlq topics" : "none", dead ? "bad" : "ok");
    }
  }

  /* ---------- processes, lag, dead letters ---------- */

  function groupLag(name) {
    if (!state.lag) return null;
    for (var i = 0; i < state.lag.groups.length; i++) {
      if (state.lag.groups[i].name === name) return state.lag.groups[i].lag;
    }
    return null;
  }

  function processRow(kind, name, status, lag, detail) {
    var tr = el("tr");
    var who = el("td");
    who.appendChild(el("span", "kind", kind));
    who.appendChild(document.createTextNode(name));
    tr.appendChild(who);
    var st = el("td");
    var s = (status && status.state) || "down";
    var pill = el("span", "pill " + s, s);
    if (status && status.heartbeat_age_seconds !== undefined) pill.title = "last report " + fmtAge(status.heartbeat_age_seconds);
    st.appendChild(pill);
    tr.appendChild(st);
    tr.appendChild(el("td", "num", lag === null || lag === undefined ? "–" : fmtInt(lag)));
    var cell = el("td", "detail", detail);
    if (status && status.last_error) cell.title = status.last_error;
    tr.appendChild(cell);
    return tr;
  }

  function renderProcesses() {
    var s = state.services;
    if (!s) return;
    var rows = document.createDocumentFragment();
    var relay = s.relay || { state: "down" };
    var relayDetail = relay.state === "down"
      ? "no relay holds the lease"
      : "backlog " + fmtInt(relay.backlog) + " · published " + fmtInt(relay.published_total) +
        (relay.lease_holder ? " · " + relay.lease_holder : "");
    rows.appendChild(processRow("relay", "outbox", relay, relay.backlog, relayDetail));
    var sched = s.scheduler || { state: "down" };
    var schedDetail = sched.state === "down"
      ? "no scheduler is running: due transitions wait"
      : "timers " + fmtInt(sched.pending || 0) +
        (sched.next_due_at ? " · next due " + fmtClock(sched.next_due_at) : " · none due") +
        " · fired " + fmtInt(sched.fired_total || 0) +
        (sched.last_lateness_ms !== null && sched.last_lateness_ms !== undefined
          ? " · lateness " + fmtInt(sched.last_lateness_ms) + " ms" : "") +
        (sched.instances ? " · " + Object.keys(sched.instances).length + " instance(s)" : "");
    rows.appendChild(processRow("scheduler", "timers", sched, sched.overdue, schedDetail));
    Object.keys(s.projectors).sort().forEach(function (name) {
      var p = s.projectors[name];
      var detail = p.state === "down" && p.heartbeat_age_seconds === null
        ? "has never reported"
        : "applied " + fmtInt(p.applied_total || 0) + " · beat " + fmtAge(p.heartbeat_age_seconds) +
          (p.aggregates_with_parked_events ? " · parked " + fmtInt(p.aggregates_with_parked_events) : "");
      var lag = groupLag(name);
      rows.appendChild(processRow("projector", name, p, lag === null ? p.lag : lag, detail));
    });
    Object.keys(s.workers).sort().forEach(function (name) {
      var w = s.workers[name];
      var detail = "not running";
      if (w.outcomes) {
        var parts = Object.keys(w.outcomes).sort().map(function (k) {
          return k.replace(/_/g, " ") + " " + fmtInt(w.outcomes[k]);
        });
        if (w.retries) parts.push("retries " + fmtInt(w.retries));
        detail = parts.length ? parts.join(" · ") : "idle since start";
        if (w.last_error) detail += " · \u26a0 last error (hover)";
      }
      rows.appendChild(processRow("worker", name, w, groupLag(name), detail));
    });
    $("processes").replaceChildren(rows);
  }

  function renderLag() {
    var box = $("lag");
    if (!state.lag || !state.lag.groups || !state.lag.groups.length) return;
    var out = document.createDocumentFragment();
    state.lag.groups.forEach(function (g) {
      var wrap = el("div", "lag-group");
      var title = el("div", "lag-title");
      var left = el("span", null, g.name);
      left.appendChild(el("span", "kind", g.kind));
      left.title = g.group_id;
      title.appendChild(left);
      title.appendChild(el("span", "total" + (g.lag ? "" : " zero"), g.lag ? fmtInt(g.lag) + " behind" : "caught up"));
      wrap.appendChild(title);
      var grid = el("div", "partitions");
      var topics = new Set(g.partitions.map(function (p) { return p.topic; }));
      g.partitions.forEach(function (p) {
        var cell = el("div", "partition" + (p.lag >= 100 ? " far" : p.lag > 0 ? " behind" : ""));
        var label = (topics.size > 1 ? shortTopic(p.topic).charAt(0) : "p") + p.partition;
        cell.appendChild(el("span", "p", label));
        cell.appendChild(document.createTextNode(fmtInt(p.lag)));
        cell.title = p.topic + " [" + p.partition + "] committed " + (p.committed === null ? "none" : fmtInt(p.committed)) + " of " + fmtInt(p.end);
        grid.appendChild(cell);
      });
      wrap.appendChild(grid);
      out.appendChild(wrap);
    });
    box.replaceChildren(out);
  }

  function renderDeadLetters() {
    var box = $("dead-letters");
    if (!state.deadLetters) return;
    var topics = Object.keys(state.deadLetters).sort();
    if (!topics.length) return;
    var out = document.createDocumentFragment();
    topics.forEach(function (topic) {
      var row = el("div", "dlq");
      row.appendChild(el("span", null, topic));
      var n = state.deadLetters[topic];
      row.appendChild(el("span", "n " + (n ? "some" : "none"), fmtInt(n)));
      out.appendChild(row);
    });
    box.replaceChildren(out);
  }

  function renderAges() {
    if (state.lag && state.lag.sampled_at) {
      $("lag-age").textContent = "sampled " + fmtAge((Date.now() - Date.parse(state.lag.sampled_at)) / 1000);
    }
    if (state.servicesAt) $("status-age").textContent = "updated " + fmtAge((Date.now() - state.servicesAt) / 1000);
    renderFooter();
  }

  function renderFooter() {
    var parts = [];
    if (state.worker) parts.push("served by worker " + state.worker);
    if (state.expiresAt) {
      var left = (state.expiresAt - Date.now()) / 1000;
      parts.push(left > 0 ? "token expires in " + (left < 90 ? Math.round(left) + " s" : Math.round(left / 60) + " min") : "token expired");
    }
    $("worker").textContent = parts.join(" · ");
  }

  function showNotice(text) {
    var box = $("notice");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(state.noticeTimer);
    state.noticeTimer = setTimeout(function () { box.hidden = true; }, 8000);
  }

  /* ---------- throughput chart ---------- */

  function niceStep(value) {
    // 1, 2 or 5 times a power of ten: the axis reads in round numbers.
    if (value <= 0.25) return 0.25;
    var exp = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * exp >= value) return steps[i] * exp;
    return 10 * exp;
  }

  function spanLabel(ms) {
    return ms >= 60000 ? "\u2212" + Math.round(ms / 60000) + " min" : "\u2212" + Math.round(ms / 1000) + " s";
  }

  function drawChart() {
    var canvas = $("chart");
    if (!canvas || $("console").hidden) return;
    var rect = canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return;
    var dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * dpr);
    canvas.height = Math.round(rect.height * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    var W = rect.width, H = rect.height;
    var pad = { l: 44, r: 14, t: 12, b: 26 };
    var styles = getComputedStyle(document.documentElement);
    var colour = function (name) { return styles.getPropertyValue(name).trim(); };
    ctx.clearRect(0, 0, W, H);

    var now = Date.now();
    var samples = state.throughput.filter(function (s) { return Date.parse(s.at) >= now - CHART_SPAN_MS; });
    // A short history is shown over at least a minute, a long one over the last 15 minutes.
    var first = samples.length ? Date.parse(samples[0].at) - samples[0].interval_seconds * 1000 : now;
    var span = Math.min(CHART_SPAN_MS, Math.max(60000, (now - first) * 1.1));
    var x0 = now - span;
    $("chart-span").textContent = "events/s \u00b7 last " + (span >= 60000 ? Math.round(span / 60000) + " min" : Math.round(span / 1000) + " s");
    var top = 0;
    samples.forEach(function (s) { top = Math.max(top, s.published_per_second, s.projected_per_second); });
    var yStep = niceStep((top * 1.15) / 4);
    var yMax = yStep * 4;
    var x = function (t) { return pad.l + ((t - x0) / span) * (W - pad.l - pad.r); };
    var y = function (v) { return pad.t + (1 - v / yMax) * (H - pad.t - pad.b); };

    ctx.font = "11px " + colour("--sans");
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    for (var i = 0; i <= 4; i++) {
      var v = yStep * i;
      var yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = i === 0 ? colour("--line") : "rgba(42, 51, 64, .55)";
      ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(W - pad.r, yy); ctx.stroke();
      ctx.fillStyle = colour("--faint");
      ctx.textAlign = "right";
      ctx.fillText(String(Math.round(v * 100) / 100), pad.l - 8, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (var k = 5; k >= 0; k--) {
      var back = (span / 5) * k;
      var tx = x(now - back);
      ctx.fillStyle = colour("--faint");
      ctx.textAlign = k === 0 ? "right" : k === 5 ? "left" : "center";
      ctx.fillText(k === 0 ? "now" : spanLabel(back), tx, H - pad.b + 8);
    }

    if (!samples.length) {
      ctx.fillStyle = colour("--muted");
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.font = "13px " + colour("--sans");
      ctx.fillText("Waiting for the first throughput samples\u2026", (W + pad.l) / 2, H / 2);
      return;
    }

    // Each sample covers the interval that ends at its time: drawn as steps, not as points.
    var steps = function (key) {
      var points = [];
      samples.forEach(function (s) {
        var end = Date.parse(s.at);
        var start = end - s.interval_seconds * 1000;
        points.push([x(Math.max(start, x0)), y(s[key])], [x(end), y(s[key])]);
      });
      return points;
    };
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t - 2, W - pad.l - pad.r, H - pad.t - pad.b + 2);
    ctx.clip();

    var published = steps("published_per_second");
    var gradient = ctx.createLinearGradient(0, pad.t, 0, H - pad.b);
    gradient.addColorStop(0, "rgba(76, 154, 255, .55)");
    gradient.addColorStop(1, "rgba(76, 154, 255, .08)");
    ctx.beginPath();
    ctx.moveTo(published[0][0], y(0));
    published.forEach(function (p) { ctx.lineTo(p[0], p[1]); });
    ctx.lineTo(published[published.length - 1][0], y(0));
    ctx.closePath();
    ctx.fillStyle = gradient;
    ctx.fill();

    var line = function (points, stroke, width) {
      ctx.beginPath();
      points.forEach(function (p, i) { if (i) ctx.lineTo(p[0], p[1]); else ctx.moveTo(p[0], p[1]); });
      ctx.strokeStyle = stroke;
      ctx.lineWidth = width;
      ctx.lineJoin = "round";
      ctx.stroke();
    };
    line(published, colour("--published"), 3);
    ctx.setLineDash([5, 3]);
    line(steps("projected_per_second"), colour("--projected"), 2);
    ctx.setLineDash([]);
    ctx.restore();
  }

  /* ---------- controls ---------- */

  function setPaused(paused) {
    state.paused = paused;
    var button = $("pause");
    button.textContent = paused ? "Resume" : "Pause";
    button.classList.toggle("active", paused);
    $("paused-banner").hidden = !paused;
    if (state.ws) setConnection(paused ? "paused" : "live", paused ? "Connected · paused" : "Live");
    if (!paused) {
      var held = state.pending;
      var lost = state.pendingDropped;
      state.pending = [];
      state.pendingDropped = 0;
      if (held.length) addEvents(held);
      if (lost) showNotice(fmtInt(lost) + " events arrived while paused beyond what could be held.");
    }
    $("pending-count").textContent = "0";
  }

  function init() {
    $("sign-in-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var token = $("token").value.trim().replace(/^Bearer\s+/i, "");
      if (!token) return;
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
      $("connect").disabled = true;
      $("connect").textContent = "Connecting…";
      $("sign-in-error").hidden = true;
      state.retries = 0;
      disconnect();
      connect();
    });
    $("sign-out").addEventListener("click", function () { forgetToken(null); });
    $("pause").addEventListener("click", function () { setPaused(!state.paused); });
    $("resume").addEventListener("click", function () { setPaused(false); });
    $("filter-type").addEventListener("change", function (e) {
      state.filterType = e.target.value;
      renderEvents();
    });
    $("filter-aggregate").addEventListener("input", function (e) {
      state.filterAggregate = e.target.value.trim().toLowerCase();
      renderEvents();
    });
    $("clear-filters").addEventListener("click", function () {
      $("filter-type").value = "";
      $("filter-aggregate").value = "";
      state.filterType = "";
      state.filterAggregate = "";
      renderEvents();
    });
    window.addEventListener("resize", drawChart);
    setInterval(renderAges, 1000);
    setInterval(drawChart, 5000);  // the time axis moves on

    if (state.token) {
      showConsole();
      connect();
    } else {
      showSignIn();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
