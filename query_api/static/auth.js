/* The session: e-mail and password exchanged on the command API for an access token and a
 * refresh token. Both live only in this module's memory (never in storage, cookies or URLs), so
 * a reload asks for the password again. The refresh token is rotated before the access token
 * expires; signing out revokes the refresh token's whole family.
 *
 * Each sign-in and sign-out is audited by the query API (POST /console/session on this page's
 * origin, with the access token: who is the token's verified user, never something the page
 * says). A sign-in the query API refuses (403: not an admin) is audited as refused there. */

const api = document.body.dataset.commandApi;

let session = null;  // {email, access, refresh, expiresAt (ms), admin, recording (the sign-in's audit)}
let rotateTimer = null;
const listeners = { rotated: [], ended: [] };

export class AuthError extends Error {}

export function on(kind, fn) { listeners[kind].push(fn); }

export function accessToken() { return session && session.access; }
export function email() { return session && session.email; }
export function expiresAt() { return session && session.expiresAt; }
export function signedIn() { return session !== null; }

async function post(path, body) {
  try {
    return await fetch(api + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch (err) {
    throw new AuthError("Cannot reach the command API at " + api + " (is it running, and is this page's origin in CAMPAIGNS_CONSOLE_ORIGINS?).");
  }
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || "";
  } catch (err) {
    return "";
  }
}

/* The query API's audit of a sign-in or sign-out; its HTTP status (0: unreachable). */
async function audit(action, access) {
  try {
    const response = await fetch("/console/session", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer " + access },
      body: JSON.stringify({ action: action }),
      cache: "no-store",
    });
    return response.status;
  } catch (err) {
    return 0;
  }
}

function start(userEmail, pair) {
  const ttl = Math.max(1, pair.expires_in) * 1000;
  session = { email: userEmail, access: pair.access_token, refresh: pair.refresh_token, expiresAt: Date.now() + ttl };
  clearTimeout(rotateTimer);
  // Rotate a minute before expiry, or at three quarters of a short lifetime.
  const lead = Math.min(60000, ttl / 4);
  rotateTimer = setTimeout(rotate, ttl - lead);
}

export async function signIn(userEmail, password) {
  const response = await post("/auth/login", { email: userEmail, password: password });
  if (response.status === 401) throw new AuthError("Wrong e-mail or password.");
  if (response.status === 429) throw new AuthError("Too many attempts: wait a minute and try again.");
  if (response.status === 422) throw new AuthError("Check the e-mail address and the password. " + (await problem(response)));
  if (!response.ok) throw new AuthError("The command API answered " + response.status + ". " + (await problem(response)));
  start(userEmail, await response.json());
  session.admin = null;  // known once the query API recorded the sign-in (recordSignIn)
}

/* The sign-in recorded by the query API; false if it refused it (not an admin: its refusal is
 * audited too). Run beside the feed's connection, not before it, so the page is as quick to go
 * live as without it. An audit store out of reach (503) does not lock operators out of the
 * console they would use to see the outage: every action they take there is audited (or
 * refused) on its own. */
export async function recordSignIn() {
  const current = session;
  if (!current) return false;
  current.recording = audit("sign-in", current.access);
  const status = await current.recording;
  current.admin = status !== 403;
  return current.admin;
}

/* Exchange the refresh token for a new pair; true if the session goes on. */
export async function rotate() {
  if (!session) return false;
  const current = session;
  let response;
  try {
    response = await post("/auth/refresh", { refresh_token: current.refresh });
  } catch (err) {
    // The command API is unreachable: try again shortly while the access token still holds.
    if (session === current && Date.now() < current.expiresAt) rotateTimer = setTimeout(rotate, 5000);
    return false;
  }
  if (session !== current) return false;  // signed out meanwhile
  if (!response.ok) {
    end("Your session has ended (" + ((await problem(response)) || response.status) + "). Sign in again.");
    return false;
  }
  start(current.email, await response.json());
  session.admin = current.admin;
  for (const fn of listeners.rotated) fn(session.access);
  return true;
}

function end(reason) {
  clearTimeout(rotateTimer);
  session = null;
  for (const fn of listeners.ended) fn(reason);
}

/* Sign out: the refresh family is revoked on the server, the tokens forgotten here. */
export async function signOut(reason) {
  const current = session;
  clearTimeout(rotateTimer);
  session = null;
  if (current) {
    // The sign-in's record first, if it is on its way: the live feed's 4403 may tell the page
    // that this is no admin before the query API has answered it, and a refused sign-in must be
    // audited before the session ends (a tab closed right after would cancel it).
    if (current.recording) await current.recording;
    // Only a recorded sign-in has a sign-out to record.
    if (current.admin === true) await audit("sign-out", current.access);
    try { await post("/auth/logout", { refresh_token: current.refresh }); } catch (err) { /* forgotten here anyway */ }
  }
  for (const fn of listeners.ended) fn(reason || null);
}
