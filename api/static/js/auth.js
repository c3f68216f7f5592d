// Dashboard login: the API key lives in localStorage and goes out as a bearer header on
// every request (api() in common.js). A 401 anywhere opens the login form; the header shows
// who is logged in, with a "Log out" control. With auth off (/me says so) none of this shows.

export const KEY_STORAGE = "actsearch.apiKey";

export function storedKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

/** Headers that authenticate a request (none without a stored key). */
export function authHeaders() {
  const key = storedKey();
  return key ? {Authorization: `Bearer ${key}`} : {};
}

let loginOpen = false;

/** Show the login form once (later 401s while it is open change nothing). */
export function showLogin() {
  if (loginOpen) return;
  loginOpen = true;
  const overlay = document.createElement("div");
  overlay.className = "login-overlay";
  overlay.innerHTML = `
    <form class="card login" id="login-form" role="dialog" aria-modal="true" aria-labelledby="login-h">
      <h2 id="login-h">Log in</h2>
      <p class="muted" id="login-reason"></p>
      <label for="api-key-input">API key</label>
      <input id="api-key-input" name="api-key" type="password" autocomplete="current-password"
             required spellcheck="false" placeholder="as_…">
      <p class="note">An admin creates keys with <code>actsearch keys create --owner NAME</code>.
        The key is kept in this browser only.</p>
      <p class="alert error" id="login-error" role="alert" hidden></p>
      <div class="actions"><button class="btn primary" type="submit" id="login-submit">Log in</button></div>
    </form>`;
  overlay.querySelector("#login-reason").textContent = storedKey()
    ? "Your API key was refused (revoked or unknown). Enter another one."
    : "This service needs an API key.";
  document.body.append(overlay);
  const form = overlay.querySelector("#login-form");
  const input = overlay.querySelector("#api-key-input");
  const error = overlay.querySelector("#login-error");
  input.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.hidden = true;
    const res = await fetch("/me", {headers: {Accept: "application/json", Authorization: `Bearer ${key}`}});
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      error.textContent = body.detail || `${res.status} ${res.statusText}`;
      error.hidden = false;
      return;
    }
    try { localStorage.setItem(KEY_STORAGE, key); } catch { /* private mode: key lost on reload */ }
    location.reload();
  });
}

export function logOut() {
  try { localStorage.removeItem(KEY_STORAGE); } catch { /* nothing stored */ }
  location.reload();
}

/** Fill the header's "who" slot from /me: owner (admin) and a log-out button. */
export async function showWho() {
  const slot = document.getElementById("who");
  if (!slot) return;
  let res;
  try {
    res = await fetch("/me", {headers: {Accept: "application/json", ...authHeaders()}});
  } catch { return; }
  if (res.status === 401) {
    showLogin();
    return;
  }
  if (!res.ok) return;
  const me = await res.json();
  if (!me.auth_enabled) return;
  const name = document.createElement("span");
  name.id = "who-name";
  name.textContent = `${me.owner}${me.admin ? " (admin)" : ""}`;
  const out = document.createElement("button");
  out.type = "button";
  out.className = "btn small";
  out.id = "logout";
  out.textContent = "Log out";
  out.addEventListener("click", logOut);
  slot.replaceChildren(document.createTextNode("Logged in as "), name, out);
}

/** Links with `download` to API paths cannot carry the header: fetch the file with it instead. */
export function authDownloads() {
  document.addEventListener("click", async (event) => {
    const a = event.target instanceof Element ? event.target.closest("a[download]") : null;
    if (!a || !storedKey() || !a.getAttribute("href").startsWith("/")) return;
    event.preventDefault();
    const res = await fetch(a.getAttribute("href"), {headers: authHeaders()});
    if (res.status === 401) { showLogin(); return; }
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      alert(body.detail || `${res.status} ${res.statusText}`);
      return;
    }
    const match = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await res.blob());
    const link = Object.assign(document.createElement("a"), {href: url, download: match ? match[1] : ""});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });
}
