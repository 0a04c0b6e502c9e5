/* The throughput chart: published and projected events per second on a canvas. */

import { $ } from "./format.js";
import { CHART_SPAN_MS, samples } from "./state.js";

function niceStep(value) {
  // 1, 2 or 5 times a power of ten: the axis reads in round numbers.
  if (value <= 0.25) return 0.25;
  const exp = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) if (step * exp >= value) return step * exp;
  return 10 * exp;
}

function spanLabel(ms) {
  return ms >= 60000 ? "\u2212" + Math.round(ms / 60000) + " min" : "\u2212" + Math.round(ms / 1000) + " s";
}

export function drawChart() {
  const canvas = $("chart");
  if (!canvas || $("console").hidden || $("view-live").hidden) return;
  const rect = canvas.getBoundingClientRect();
  if (!rect.width || !rect.height) return;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(rect.width * dpr);
  canvas.height = Math.round(rect.height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const W = rect.width, H = rect.height;
  const pad = { l: 44, r: 14, t: 12, b: 26 };
  const styles = getComputedStyle(document.documentElement);
  const colour = (name) => styles.getPropertyValue(name).trim();
  ctx.clearRect(0, 0, W, H);

  const now = Date.now();
  const shown = samples.throughput.filter((s) => Date.parse(s.at) >= now - CHART_SPAN_MS);
  // A short history is shown over at least a minute, a long one over the last 15 minutes.
  const first = shown.length ? Date.parse(shown[0].at) - shown[0].interval_seconds * 1000 : now;
  const span = Math.min(CHART_SPAN_MS, Math.max(60000, (now - first) * 1.1));
  const x0 = now - span;
  $("chart-span").textContent = "events/s \u00b7 last " + (span >= 60000 ? Math.round(span / 60000) + " min" : Math.round(span / 1000) + " s");
  let top = 0;
  for (const s of shown) top = Math.max(top, s.published_per_second, s.projected_per_second);
  const yStep = niceStep((top * 1.15) / 4);
  const yMax = yStep * 4;
  const x = (t) => pad.l + ((t - x0) / span) * (W - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v / yMax) * (H - pad.t - pad.b);

  ctx.font = "11px " + colour("--sans");
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = yStep * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = i === 0 ? colour("--line") : "rgba(42, 51, 64, .55)";
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(W - pad.r, yy); ctx.stroke();
    ctx.fillStyle = colour("--faint");
    ctx.textAlign = "right";
    ctx.fillText(String(Math.round(v * 100) / 100), pad.l - 8, yy);
  }
  ctx.textBaseline = "top";
  for (let k = 5; k >= 0; k--) {
    const back = (span / 5) * k;
    ctx.fillStyle = colour("--faint");
    ctx.textAlign = k === 0 ? "right" : k === 5 ? "left" : "center";
    ctx.fillText(k === 0 ? "now" : spanLabel(back), x(now - back), H - pad.b + 8);
  }

  if (!shown.length) {
    ctx.fillStyle = colour("--muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.font = "13px " + colour("--sans");
    ctx.fillText("Waiting for the first throughput samples\u2026", (W + pad.l) / 2, H / 2);
    return;
  }

  // Each sample covers the interval that ends at its time: drawn as steps, not as points.
  const steps = (key) => {
    const points = [];
    for (const s of shown) {
      const end = Date.parse(s.at);
      const start = end - s.interval_seconds * 1000;
      points.push([x(Math.max(start, x0)), y(s[key])], [x(end), y(s[key])]);
    }
    return points;
  };
  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.l, pad.t - 2, W - pad.l - pad.r, H - pad.t - pad.b + 2);
  ctx.clip();

  const published = steps("published_per_second");
  const gradient = ctx.createLinearGradient(0, pad.t, 0, H - pad.b);
  gradient.addColorStop(0, "rgba(76, 154, 255, .55)");
  gradient.addColorStop(1, "rgba(76, 154, 255, .08)");
  ctx.beginPath();
  ctx.moveTo(published[0][0], y(0));
  for (const p of published) ctx.lineTo(p[0], p[1]);
  ctx.lineTo(published[published.length - 1][0], y(0));
  ctx.closePath();
  ctx.fillStyle = gradient;
  ctx.fill();

  const line = (points, stroke, width) => {
    ctx.beginPath();
    points.forEach((p, i) => { if (i) ctx.lineTo(p[0], p[1]); else ctx.moveTo(p[0], p[1]); });
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
