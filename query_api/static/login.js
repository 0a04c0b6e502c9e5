/* The sign-in form: a plain e-mail and password form; the password goes only to the command API. */

import * as auth from "./auth.js";
import { $ } from "./format.js";

export function showSignIn(message) {
  $("console").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("pause").disabled = true;
  $("tabs").hidden = true;
  const button = $("connect");
  button.disabled = false;
  button.textContent = "Sign in";
  const box = $("sign-in-error");
  box.hidden = !message;
  box.textContent = message || "";
  $("password").value = "";
  ($("email").value ? $("password") : $("email")).focus();
}

export function hideSignIn() {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  $("pause").disabled = false;
  $("tabs").hidden = false;
}

/* onSignedIn() runs once the command API has given a token pair and the query API recorded the
 * sign-in; onRefused() when the query API refused it (not an admin). */
export function installSignIn(onSignedIn, onRefused) {
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const email = $("email").value.trim();
    const password = $("password").value;
    if (!email || !password) return;
    const button = $("connect");
    button.disabled = true;
    button.textContent = "Signing in…";
    $("sign-in-error").hidden = true;
    try {
      await auth.signIn(email, password);
    } catch (err) {
      showSignIn(err instanceof auth.AuthError ? err.message : "Sign-in failed: " + err);
      return;
    }
    $("password").value = "";
    button.textContent = "Connecting…";
    onSignedIn();
    if (!(await auth.recordSignIn())) onRefused();
  });
}
