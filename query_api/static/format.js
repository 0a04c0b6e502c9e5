/* DOM helpers and formatting. Every value from a server is written with textContent, never as HTML. */

export function $(id) { return document.getElementById(id); }

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function fmtInt(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "–";
  if (ms < 1000) return Math.max(0, Math.round(ms)) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  return Math.round(ms / 60000) + " min";
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

const pad = (n, w) => String(n).padStart(w || 2, "0");

export function fmtClock(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "–";
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
}

export function fmtDateTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "–";
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + fmtClock(iso);
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return fmtInt(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function shortTopic(topic) {
  const parts = String(topic).split(".");
  const i = parts.lastIndexOf("events");
  return i > 0 ? parts[i - 1] : topic;
}

export function delayLevel(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 500 ? "ok" : ms < 3000 ? "warn" : "bad";
}

export function humanise(key) {
  return String(key).replace(/_/g, " ");
}
