// devinit inspector: the page served at /ui/ by the state server. No framework, no build step.
// Talks to the devinit route (/devinit/v1/..., docs/state-api.md) on the same origin only.
// Every view has its own URL in the fragment:
//   #/                          the stores
//   #/<store>?prefix=P&cursor=C  a page of keys (grouped by app id)
//   #/<store>?new&prefix=P       create a key
//   #/<store>/<key>             one key (the key as stored, percent-encoded)
//   #/~feed                     the live feed of state API calls
// Values from the server are put into the page as text (textContent), never as HTML.
"use strict";

const API = "/devinit/v1/";
const TOKEN_KEY = "devinit.token";
const THEME_KEY = "devinit.theme";
const PAGE = 100;
const FEED_ROWS = 500;
const COLOUR_LIMIT = 256 * 1024; // bigger JSON values are shown indented but not coloured
const HEX_LIMIT = 64 * 1024; // bytes shown in a hex dump
const JSON_TYPE = "application/json";
const TEXT_TYPE = "text/plain; charset=utf-8";
const BINARY_TYPE = "application/octet-stream";

// ---------------------------------------------------------------------------------------------
// small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const enc = encodeURIComponent;
const $ = (sel) => document.querySelector(sel);

function formatSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function formatLeft(seconds) {
  if (seconds <= 0) return "expired";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function appIdOf(key) {
  const i = key.indexOf("||");
  return i < 0 ? null : key.slice(0, i);
}

function keyHash(store, key) {
  return `#/${enc(store)}/${enc(key)}`;
}

function storeHash(store, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const qs = q.toString().replace(/=(?=&|$)/g, "");
  return `#/${enc(store)}${qs ? "?" + qs : ""}`;
}

function bytesFromBase64(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function base64FromBytes(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

// Server time, for TTLs: expiry instants are the server's clock; this is how far ours differs.
let clockSkew = 0;
function noteServerTime(now) {
  if (typeof now === "number") clockSkew = now - Date.now() / 1000;
}
function serverNow() {
  return Date.now() / 1000 + clockSkew;
}

// ---------------------------------------------------------------------------------------------
// the devinit route

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, signal) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["dapr-api-token"] = token;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = JSON_TYPE;
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(API + path, { method, headers, body: payload, cache: "no-store", credentials: "omit", signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "NETWORK", "the devinit server does not answer: is it running? (devinit status)");
  }
  noteLive(true);
  if (r.status === 204) return null;
  let data = null;
  try {
    data = await r.json();
  } catch (e) {
    data = null;
  }
  if (!r.ok) {
    if (r.status === 401) askToken(true);
    throw new ApiError(r.status, data && data.errorCode, (data && data.message) || `${r.status} ${r.statusText}`);
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// the token: traded for the ticket devinit ui puts in the fragment, or typed
//
// devinit ui never puts the token itself in the URL: the URL is on the browser's command line,
// which every local user can read (ps). It opens #ticket=<ticket> instead; the page takes the
// ticket off the address bar at once and trades it, once, for the token (POST tickets/redeem,
// the one call without the token). A ticket works once and for 60 s: if another process
// redeemed it first, that process knows the token, and the page says so.

const TICKET_FRAGMENT = /^#ticket=([^&]*)(?:&(.*))?$/;

// The ticket in the fragment, taken off the address bar (and out of the history); or null.
function takeTicketFromFragment() {
  const m = TICKET_FRAGMENT.exec(location.hash);
  if (!m) return null;
  const decode = (text) => { try { return decodeURIComponent(text); } catch (e) { return text; } };
  const rest = m[2] ? decode(m[2]) : "/";
  history.replaceState(null, "", `${location.pathname}#${rest.startsWith("/") ? rest : "/"}`);
  return decode(m[1]);
}

async function redeemTicket(ticket) {
  let r;
  let data = null;
  try {
    r = await fetch(API + "tickets/redeem", {
      method: "POST", headers: { "Content-Type": JSON_TYPE }, body: JSON.stringify({ ticket }),
      cache: "no-store", credentials: "omit",
    });
    data = await r.json();
  } catch (e) {
    data = null;
  }
  if (r && r.ok && data && typeof data.token === "string") {
    sessionStorage.setItem(TOKEN_KEY, data.token);
    const dialog = $("#token-dialog");
    if (dialog.open) dialog.close("ticket"); // asked for meanwhile (a refresh without the token)
    return;
  }
  let why;
  if (!r) why = "The devinit server does not answer: is it running? (devinit status)";
  else if (data && data.errorCode === "ERR_TICKET_USED")
    why = "Warning: the ticket devinit ui gave this page was used already, by someone else: they know the API token now. " +
      "Restart the server with a new DAPR_API_TOKEN, then run devinit ui again. Or enter the token here.";
  else if (data && data.errorCode === "ERR_TICKET_INVALID")
    why = "The ticket devinit ui gave this page is unknown or expired (a ticket works once, within 60 s): " +
      "run devinit ui again, or enter the API token (DAPR_API_TOKEN).";
  else why = `The ticket was refused (${(data && data.message) || r.status}). Enter the API token (DAPR_API_TOKEN).`;
  askToken(false, why);
}

// The token from a #token= fragment (what devinit ui opened before tickets), taken off the URL.
function takeTokenFromFragment() {
  const m = /^#token=([^&]*)(?:&(.*))?$/.exec(location.hash);
  if (!m) return false;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  const rest = m[2] ? decodeURIComponent(m[2]) : "/";
  history.replaceState(null, "", `${location.pathname}#${rest.startsWith("/") ? rest : "/"}`);
  return true;
}

// The token dialog; ``why`` (a ticket's trouble) is shown even over a dialog already open.
function askToken(wrong, why) {
  const dialog = $("#token-dialog");
  if (dialog.open && !why) return;
  const text = $("#token-text");
  text.textContent = why || (wrong && sessionStorage.getItem(TOKEN_KEY)
    ? "The server refused this token. Enter the value of DAPR_API_TOKEN the server runs with."
    : "This server wants the API token (DAPR_API_TOKEN). It is kept in this tab only (sessionStorage) and sent to this server alone.");
  text.classList.toggle("warn", Boolean(why));
  if (dialog.open) return;
  const input = $("#token-input");
  input.value = "";
  dialog.showModal();
  input.focus();
}

function setUpTokenDialog() {
  const dialog = $("#token-dialog");
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok" && $("#token-input").value) sessionStorage.setItem(TOKEN_KEY, $("#token-input").value);
    else if (dialog.returnValue === "forget") sessionStorage.removeItem(TOKEN_KEY);
    else return;
    refreshStores();
    render();
  });
  $("#token-button").addEventListener("click", () => askToken(false));
}

// ---------------------------------------------------------------------------------------------
// theme: follow the system, or light, or dark (remembered in localStorage)

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  $("#theme").textContent = theme === "light" ? "Light" : theme === "dark" ? "Dark" : "Auto";
}

function setUpTheme() {
  applyTheme(localStorage.getItem(THEME_KEY) || "auto");
  $("#theme").addEventListener("click", () => {
    const order = ["auto", "light", "dark"];
    const next = order[(order.indexOf(localStorage.getItem(THEME_KEY) || "auto") + 1) % order.length];
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
}

// ---------------------------------------------------------------------------------------------
// the stores in the side bar, with their health (refreshed every few seconds)

let stores = null; // the last answer of GET /devinit/v1/stores
let storesError = null;

async function refreshStores() {
  try {
    stores = await api("GET", "stores");
    storesError = null;
    noteServerTime(stores.now);
  } catch (e) {
    storesError = e;
  }
  drawStoreList();
}

function drawStoreList() {
  const list = $("#store-list");
  const current = route().store;
  list.replaceChildren();
  if (!stores) {
    list.append(h("li", { class: "muted" }, storesError ? storesError.message : "…"));
    return;
  }
  for (const s of stores.stores) {
    const status = s.health.status;
    list.append(
      h("li", {},
        h("a", { href: storeHash(s.name), class: s.name === current ? "current" : null, "data-store": s.name,
                 title: status === "down" ? `down: ${s.health.error || ""}` : status },
          h("span", { class: `health ${status}`, "aria-label": status }), s.name, h("span", { class: "type" }, s.type.replace(/^state\./, ""))))
    );
  }
  for (const f of stores.failed) list.append(h("li", { class: "muted", title: f.error }, h("span", { class: "health down" }), ` ${f.name} (not loaded)`));
}

function noteLive(on) {
  $("#feed-link").classList.toggle("live", on && feed.running);
}

// ---------------------------------------------------------------------------------------------
// routing

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?", 2);
  const params = new URLSearchParams(query || "");
  const parts = path.replace(/^\//, "").split("/");
  if (parts[0] === "~feed") return { view: "feed", params };
  if (!parts[0]) return { view: "home", params };
  const store = decodeURIComponent(parts[0]);
  if (parts.length > 1 && parts.slice(1).join("/") !== "") {
    return { view: "key", store, key: decodeURIComponent(parts.slice(1).join("/")), params };
  }
  return { view: params.has("new") ? "create" : "store", store, params };
}

let view = { dispose() {} }; // the view on screen; dispose() stops its timers and requests

function render() {
  const ticket = takeTicketFromFragment(); // a devinit ui URL opened in this tab
  if (ticket !== null) {
    redeemTicket(ticket).then(() => { refreshStores(); render(); });
    return;
  }
  if (takeTokenFromFragment()) refreshStores();
  view.dispose();
  const r = route();
  drawCrumbs(r);
  drawStoreList();
  const main = $("#main");
  main.replaceChildren();
  const views = { home: homeView, store: storeView, key: keyView, create: createView, feed: feedView };
  view = views[r.view](main, r) || { dispose() {} };
}

function drawCrumbs(r) {
  const crumbs = $("#crumbs");
  crumbs.replaceChildren();
  const parts = [];
  if (r.view === "feed") parts.push(h("span", {}, "Live feed"));
  if (r.store) parts.push(h("a", { href: storeHash(r.store) }, r.store));
  if (r.view === "key") parts.push(h("span", { class: "mono" }, r.key));
  if (r.view === "create") parts.push(h("span", {}, "New key"));
  parts.forEach((p, i) => {
    if (i) crumbs.append(h("span", { class: "sep" }, "/"));
    crumbs.append(p);
  });
  document.title = r.view === "key" ? `${r.key} · ${r.store} · devinit` : r.store ? `${r.store} · devinit` : "devinit inspector";
}

function errorNote(e, retry) {
  return h("div", { class: "note error", role: "alert" },
    h("span", { class: "text" }, e.message || String(e)),
    retry ? h("button", { type: "button", onclick: retry }, "Retry") : null);
}

// ---------------------------------------------------------------------------------------------
// #/  the stores

function homeView(main) {
  const wrap = h("div", {});
  main.append(h("h1", {}, "State stores"), h("p", { class: "muted" }, "What the devinit state server holds, in every store it serves, for every app id."), wrap);
  const draw = () => {
    wrap.replaceChildren();
    if (!stores) {
      wrap.append(storesError ? errorNote(storesError, () => refreshStores().then(draw)) : h("p", { class: "muted" }, "Loading…"));
      return;
    }
    if (!stores.stores.length && !stores.failed.length) {
      wrap.append(h("div", { class: "panel empty" }, "No state store is configured. Add a component file, or run devinit init."));
    }
    const cards = h("div", { class: "cards" });
    for (const s of stores.stores) {
      const health = s.health.status === "down" ? `down: ${s.health.error || ""}` : s.health.status;
      cards.append(
        h("a", { class: "panel card", href: storeHash(s.name), "data-store": s.name },
          h("div", { class: "name" }, h("span", { class: `health ${s.health.status}` }), s.name),
          h("div", { class: "meta" }, s.type),
          h("div", { class: "meta" }, s.prefix ? `keys written here get the prefix ${s.prefix}` : "no key prefix"),
          h("div", { class: "meta" }, health))
      );
    }
    for (const f of stores.failed) {
      cards.append(h("div", { class: "panel card" }, h("div", { class: "name" }, h("span", { class: "health down" }), f.name),
        h("div", { class: "meta" }, `not loaded: ${f.error}`)));
    }
    wrap.append(cards);
  };
  draw();
  const timer = setInterval(draw, 5000);
  if (!stores) refreshStores().then(draw);
  return { dispose: () => clearInterval(timer) };
}

// ---------------------------------------------------------------------------------------------
// #/<store>  a page of keys, grouped by app id

function storeView(main, r) {
  const store = r.store;
  const prefix = r.params.get("prefix") || "";
  const cursor = r.params.get("cursor") || "";
  const abort = new AbortController();
  const filter = h("input", { type: "search", id: "prefix", placeholder: "Filter by key prefix, e.g. myapp||order-", value: prefix,
    spellcheck: "false", "aria-label": "Key prefix" });
  let debounce = null;
  filter.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { location.hash = storeHash(store, { prefix: filter.value }); }, 350);
  });
  const head = h("div", { class: "panel-head" },
    h("h2", {}, "Keys"),
    h("div", { class: "filter" }, filter),
    h("a", { class: "button primary", id: "new-key", href: storeHash(store, { new: "1", prefix }) }, "New key"));
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const flash = sessionStorage.getItem("devinit.flash");
  sessionStorage.removeItem("devinit.flash");
  main.append(
    h("h1", {}, store),
    h("p", { class: "muted" }, "Keys as stored: the part before || is the app id that wrote them."),
    flash ? h("div", { class: "note ok", role: "status", id: "flash" }, h("span", { class: "text" }, flash)) : "",
    h("div", { class: "panel" }, head, body)
  );
  const started = performance.now();
  loadPage(store, prefix, cursor, abort.signal).then(
    (page) => {
      body.replaceChildren(...keyTable(store, page, prefix, cursor));
      if (!firstListMarked) {
        firstListMarked = true;
        performance.mark("devinit:first-list"); // read by bench/ (the page's first list)
        performance.measure("devinit:first-list-fetch", { start: started, end: performance.now() });
      }
    },
    (e) => {
      if (e.name === "AbortError") return;
      body.replaceChildren(errorNote(e, render));
      if (cursor) body.append(h("div", { class: "pager" }, h("a", { class: "button", href: storeHash(store, { prefix }) }, "Start from the first page")));
    }
  );
  return { dispose: () => { abort.abort(); clearTimeout(debounce); } };
}
let firstListMarked = false;

// A page of keys. A store may answer a short page (even an empty one) with a cursor to go on
// (Redis scans a bounded slice per call): ask again, a few times, until the page has keys.
async function loadPage(store, prefix, cursor, signal) {
  const keys = [];
  let next = cursor || null;
  let now = null;
  for (let calls = 0; calls < 10; calls++) {
    const path = `stores/${enc(store)}/keys?limit=${PAGE - keys.length}&prefix=${enc(prefix)}${next ? "&cursor=" + enc(next) : ""}`;
    const page = await api("GET", path, undefined, signal);
    noteServerTime(page.now);
    now = page.now;
    keys.push(...page.keys);
    next = page.cursor;
    if (!next || keys.length >= PAGE / 2) break;
  }
  return { keys, cursor: next, now };
}

function keyTable(store, page, prefix, cursor) {
  if (!page.keys.length) {
    const what = prefix ? `No keys start with ${prefix}.` : "This store holds no keys.";
    if (!page.cursor) return [h("p", { class: "empty", id: "no-keys" }, cursor ? "No more keys." : what)];
    return [h("p", { class: "empty" }, "No keys in this part of the store yet."),
      h("div", { class: "pager" }, h("span", { class: "spacer" }), h("a", { class: "button", id: "next-page", href: storeHash(store, { prefix, cursor: page.cursor }) }, "Go on"))];
  }
  const tbody = h("tbody", {});
  const groups = new Map();
  for (const k of page.keys) {
    const app = k.appId === null ? "" : k.appId;
    if (!groups.has(app)) groups.set(app, []);
    groups.get(app).push(k);
  }
  for (const [app, keys] of groups) {
    const label = app === "" ? h("span", { class: "muted" }, "no app id") : h("a", { href: storeHash(store, { prefix: `${app}||` }), title: "Show this app id's keys only" }, app);
    tbody.append(h("tr", { class: "group", "data-app-id": app }, h("td", { colspan: 4 }, label, h("span", { class: "count" }, `${keys.length} on this page`))));
    for (const k of keys) {
      const shown = k.appId === null ? k.key : k.key.slice(k.appId.length + 2);
      tbody.append(
        h("tr", { class: "key-row", "data-key": k.key },
          h("td", { class: "key" }, h("a", { href: keyHash(store, k.key), title: k.key }, shown)),
          h("td", { class: "num" }, formatSize(k.size)),
          h("td", { class: "num ttl", "data-expire": k.expireAt === null ? null : k.expireAt }, k.expireAt === null ? "—" : formatLeft(k.expireAt - serverNow())),
          h("td", { class: "etag hide-narrow", title: k.etag }, k.etag))
      );
    }
  }
  const table = h("table", { id: "keys" },
    h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Expires in"), h("th", { class: "hide-narrow" }, "Etag"))),
    tbody);
  const pager = h("div", { class: "pager" },
    h("span", { class: "muted" }, `${page.keys.length} key${page.keys.length === 1 ? "" : "s"}${cursor ? " (a later page)" : ""}`),
    h("span", { class: "spacer" }),
    cursor ? h("a", { class: "button", href: storeHash(store, { prefix }) }, "First page") : null,
    page.cursor ? h("a", { class: "button", id: "next-page", href: storeHash(store, { prefix, cursor: page.cursor }) }, "Next page") : null);
  return [h("div", { class: "table-wrap" }, table), pager];
}

// ---------------------------------------------------------------------------------------------
// JSON as coloured, indented text, from the stored text itself (no JSON.parse: numbers stay exact)

const JSON_TOKEN = /\s*(?:("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(true|false|null)|([{}[\],:]))/y;

function prettyJson(text, colour) {
  // returns [text, fragment|null]: the indented text, and coloured nodes when asked
  const frag = colour ? document.createDocumentFragment() : null;
  let out = "";
  let depth = 0;
  let pending = null; // the span being built (consecutive text of one class)
  const emit = (s, cls) => {
    out += s;
    if (!frag) return;
    if (pending && pending.cls === cls) pending.text += s;
    else {
      flush();
      pending = { cls, text: s };
    }
  };
  const flush = () => {
    if (pending && frag) frag.append(pending.cls ? h("span", { class: pending.cls }, pending.text) : document.createTextNode(pending.text));
    pending = null;
  };
  const indent = () => "\n" + "  ".repeat(depth);
  JSON_TOKEN.lastIndex = 0;
  let m;
  let prev = null;
  while (JSON_TOKEN.lastIndex < text.length && (m = JSON_TOKEN.exec(text))) {
    const [, str, num, lit, punc] = m;
    if (str !== undefined) {
      const rest = text.slice(JSON_TOKEN.lastIndex).trimStart();
      emit(str, rest.startsWith(":") ? "j-key" : "j-str");
    } else if (num !== undefined) emit(num, "j-num");
    else if (lit !== undefined) emit(lit, "j-lit");
    else if (punc === "{" || punc === "[") {
      const close = punc === "{" ? "}" : "]";
      const after = text.slice(JSON_TOKEN.lastIndex).trimStart();
      if (after.startsWith(close)) { // empty: keep it on one line
        emit(punc + close, "j-punc");
        JSON_TOKEN.lastIndex = text.length - after.length + 1;
      } else {
        depth++;
        emit(punc, "j-punc");
        emit(indent(), null);
      }
    } else if (punc === "}" || punc === "]") {
      depth--;
      emit(indent(), null);
      emit(punc, "j-punc");
    } else if (punc === ",") {
      emit(",", "j-punc");
      emit(indent(), null);
    } else if (punc === ":") emit(": ", "j-punc");
    prev = m;
  }
  flush();
  if (prev === null && text.trim() !== "") return [text, null];
  return [out, frag];
}

function hexDump(bytes) {
  const lines = [];
  const n = Math.min(bytes.length, HEX_LIMIT);
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  if (bytes.length > n) lines.push(`… ${bytes.length - n} more bytes not shown`);
  return lines.join("\n");
}

// an item from the server (value always as base64: the page shows the stored bytes exactly)
function decodeItem(item) {
  const bytes = bytesFromBase64(item.value);
  let text = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    text = null;
  }
  const kind = item.contentType === JSON_TYPE ? "json" : text !== null ? "text" : "binary";
  return { ...item, bytes, text, kind };
}

// ---------------------------------------------------------------------------------------------
// #/<store>/<key>  one key: its value, etag, size, TTL; edit with the etag; delete

function keyView(main, r) {
  const { store, key } = r;
  const abort = new AbortController();
  let item = null; // what we last read (decoded); null when the key is missing
  let shownAs = null; // "pretty" | "text" | "hex"
  let editing = false;
  let draft = null; // the editor's text, kept across a reload after a conflict

  const noteArea = h("div", {});
  const head = h("div", { class: "key-head" });
  const facts = h("div", { class: "facts" });
  const valuePanel = h("div", { class: "panel" });
  main.append(noteArea, head, facts, valuePanel);

  const say = (kind, text, ...extra) => {
    noteArea.replaceChildren(h("div", { class: `note ${kind}`, role: kind === "ok" ? "status" : "alert", id: `note-${kind}` },
      h("span", { class: "text" }, text), ...extra));
  };

  const load = async () => {
    try {
      const got = await api("GET", `stores/${enc(store)}/keys/${enc(key)}?as=base64`, undefined, abort.signal);
      noteServerTime(got.now);
      item = decodeItem(got);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      if (e.status !== 404) throw e;
      item = null;
    }
  };

  const draw = () => {
    head.replaceChildren(
      h("div", { class: "title" },
        h("h1", { id: "key-name", class: "mono" }, key),
        h("div", {}, appIdOf(key) !== null ? h("span", { class: "badge" }, `app id ${appIdOf(key)}`) : h("span", { class: "muted" }, "no app id"),
          " ", h("span", { class: "muted" }, `in ${store}`))),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "reload", onclick: () => reload(false) }, "Reload"),
        item && !editing ? h("button", { type: "button", id: "edit", onclick: startEdit }, "Edit") : null,
        item ? h("button", { type: "button", id: "delete", class: "danger", onclick: confirmDelete }, "Delete") : null)
    );
    facts.replaceChildren();
    valuePanel.replaceChildren();
    if (!item) {
      facts.hidden = true;
      valuePanel.append(h("p", { class: "empty", id: "missing" }, "This key does not exist (it was deleted, expired, or never written)."));
      if (editing) valuePanel.append(editor());
      return;
    }
    facts.hidden = false;
    const fact = (label, value, attrs) => h("div", { class: "fact" }, h("div", { class: "label" }, label), h("div", { class: "value", ...(attrs || {}) }, value));
    facts.append(
      fact("Etag", item.etag, { id: "etag", title: item.etag }),
      fact("Size", formatSize(item.size), { id: "size", title: `${item.size} bytes` }),
      fact("Type", item.kind === "json" ? "JSON" : item.kind === "text" ? "text" : "binary", { id: "kind" }),
      fact("Expires in", item.expireAt === null ? "no expiry" : formatLeft(item.expireAt - serverNow()),
        { id: "ttl", "data-expire": item.expireAt === null ? null : item.expireAt, title: item.expireAt === null ? null : new Date(item.expireAt * 1000).toISOString() })
    );
    if (editing) valuePanel.append(editor());
    else valuePanel.append(...valueView());
  };

  const valueView = () => {
    const choices = item.kind === "json" ? ["pretty", "text", "hex"] : item.kind === "text" ? ["text", "hex"] : ["hex"];
    if (!choices.includes(shownAs)) shownAs = choices[0];
    const tabs = h("div", { class: "tabs", role: "group", "aria-label": "Show the value as" },
      choices.map((c) => h("button", { type: "button", "aria-pressed": String(c === shownAs), "data-show": c,
        onclick: () => { shownAs = c; draw(); } }, c === "pretty" ? "JSON" : c === "text" ? "Text" : "Hex")));
    const box = h("pre", { class: "value-box", id: "value" });
    if (shownAs === "pretty") {
      const [text, frag] = prettyJson(item.text, item.text.length <= COLOUR_LIMIT);
      if (frag) box.append(frag);
      else box.textContent = text;
    } else if (shownAs === "text") {
      box.textContent = item.text;
    } else {
      box.classList.add("hex");
      box.textContent = hexDump(item.bytes);
    }
    return [h("div", { class: "panel-head" }, h("h2", {}, "Value"), h("span", { class: "spacer" }), tabs), box];
  };

  // -- editing ---------------------------------------------------------------------------------

  let kindSelect = null;
  let textArea = null;
  let ttlInput = null;

  const editor = () => {
    const kind = item ? (item.kind === "binary" ? "base64" : item.kind) : "json";
    if (draft === null) {
      draft = !item ? "" : item.kind === "json" ? prettyJson(item.text, false)[0] : item.kind === "text" ? item.text : base64FromBytes(item.bytes);
    }
    textArea = h("textarea", { id: "editor", spellcheck: "false", "aria-label": "Value" });
    textArea.value = draft;
    textArea.addEventListener("input", () => { draft = textArea.value; });
    kindSelect = h("select", { id: "editor-kind" },
      h("option", { value: "json", selected: kind === "json" }, "JSON"),
      h("option", { value: "text", selected: kind === "text" }, "Text"),
      h("option", { value: "base64", selected: kind === "base64" }, "Bytes (base64)"));
    const left = item && item.expireAt !== null ? Math.max(1, Math.ceil(item.expireAt - serverNow())) : "";
    ttlInput = h("input", { type: "number", id: "editor-ttl", min: 1, step: 1, placeholder: "no expiry", value: left });
    return h("div", { class: "panel-body" },
      h("div", { class: "form-grid" },
        h("label", {}, "Editing", h("input", { type: "text", value: key, disabled: true, class: "mono" })),
        h("label", {}, "As", kindSelect),
        h("label", {}, "TTL (seconds)", ttlInput)),
      textArea,
      h("div", { class: "actions" },
        h("button", { type: "button", id: "cancel-edit", onclick: () => { editing = false; draft = null; noteArea.replaceChildren(); draw(); } }, "Cancel"),
        h("button", { type: "button", id: "save", class: "primary", onclick: save }, item ? "Save" : "Create")));
  };

  const startEdit = () => {
    editing = true;
    draft = null;
    noteArea.replaceChildren();
    draw();
    textArea.focus();
  };

  const save = async () => {
    let body;
    try {
      body = writeBody(kindSelect.value, textArea.value, ttlInput.value, item ? { etag: item.etag } : { firstWrite: true });
    } catch (e) {
      say("error", e.message);
      return;
    }
    $("#save").disabled = true;
    try {
      const got = await api("PUT", `stores/${enc(store)}/keys/${enc(key)}?as=base64`, body);
      editing = false;
      draft = null;
      if (got) noteServerTime(got.now);
      item = got ? decodeItem(got) : null; // null: deleted again right after the write
      say("ok", "Saved.");
      draw();
    } catch (e) {
      $("#save") && ($("#save").disabled = false);
      if (e.status === 409) {
        say("conflict", item
          ? "Not saved: this key changed since you opened it (or was deleted). Reload to see the current value; your text stays in the editor."
          : "Not saved: this key was created meanwhile. Reload to see it; your text stays in the editor.",
          h("button", { type: "button", id: "conflict-reload", onclick: () => reload(true) }, "Reload"));
      } else {
        say("error", e.message);
      }
    }
  };

  const reload = async (afterConflict) => {
    const before = item ? item.etag : null;
    try {
      await load();
    } catch (e) {
      if (e.name !== "AbortError") say("error", e.message);
      return;
    }
    if (afterConflict && editing) {
      const now = item ? `etag is now ${item.etag}` : "it no longer exists";
      say("warn", `Reloaded: ${now}. Saving now replaces what is there with your text.`);
    } else if (before !== null && item && item.etag !== before) {
      say("ok", "Reloaded: the value changed since it was shown.");
    } else {
      noteArea.replaceChildren();
    }
    draw();
  };

  // -- delete ------------------------------------------------------------------------------------

  const confirmDelete = () => {
    const dialog = $("#confirm-dialog");
    $("#confirm-title").textContent = "Delete this key?";
    $("#confirm-text").textContent = `${key} will be deleted from ${store}. This cannot be undone.`;
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-cancel").focus();
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "ok") return;
      try {
        await api("DELETE", `stores/${enc(store)}/keys/${enc(key)}?etag=${enc(item.etag)}`);
        sessionStorage.setItem("devinit.flash", `Deleted ${key}.`);
        location.hash = storeHash(store, { prefix: appIdOf(key) !== null ? `${appIdOf(key)}||` : "" });
      } catch (e) {
        if (e.status === 409) {
          say("conflict", "Not deleted: this key changed since you opened it. Reload to see the current value.",
            h("button", { type: "button", id: "conflict-reload", onclick: () => reload(false) }, "Reload"));
        } else say("error", e.message);
      }
    }, { once: true });
  };

  load().then(draw, (e) => {
    if (e.name !== "AbortError") noteArea.replaceChildren(errorNote(e, render));
  });
  return { dispose: () => abort.abort() };
}

// The body of a write. JSON is sent as the text typed (checked first), so big numbers stay exact.
function writeBody(kind, text, ttl, extra) {
  const parts = [];
  if (kind === "json") {
    try {
      JSON.parse(text);
    } catch (e) {
      throw new Error(`This is not valid JSON: ${e.message}. Fix it, or save it as text.`);
    }
    parts.push(`"value":${text.trim()}`, `"contentType":${JSON.stringify(JSON_TYPE)}`);
  } else if (kind === "text") {
    parts.push(`"value":${JSON.stringify(base64FromBytes(new TextEncoder().encode(text)))}`, `"contentType":${JSON.stringify(TEXT_TYPE)}`);
  } else {
    const clean = text.replace(/\s+/g, "");
    try {
      atob(clean);
    } catch (e) {
      throw new Error("This is not valid base64.");
    }
    parts.push(`"value":${JSON.stringify(clean)}`, `"contentType":${JSON.stringify(BINARY_TYPE)}`);
  }
  if (String(ttl).trim() !== "") {
    const n = Number(ttl);
    if (!Number.isInteger(n) || n <= 0) throw new Error("The TTL must be whole seconds above 0, or empty for no expiry.");
    parts.push(`"ttl":${n}`);
  }
  for (const [k, v] of Object.entries(extra)) parts.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
  return `{${parts.join(",")}}`;
}

// ---------------------------------------------------------------------------------------------
// #/<store>?new  create a key (never over an existing one: first-write)

function createView(main, r) {
  const store = r.store;
  const prefix = r.params.get("prefix") || "";
  const keyInput = h("input", { type: "text", id: "new-key-name", class: "mono", value: prefix, spellcheck: "false", placeholder: "myapp||order-1" });
  const kindSelect = h("select", { id: "new-key-kind" }, h("option", { value: "json" }, "JSON"), h("option", { value: "text" }, "Text"), h("option", { value: "base64" }, "Bytes (base64)"));
  const ttlInput = h("input", { type: "number", id: "new-key-ttl", min: 1, step: 1, placeholder: "no expiry" });
  const textArea = h("textarea", { id: "new-key-value", spellcheck: "false", "aria-label": "Value", placeholder: '{"qty": 1}' });
  const noteArea = h("div", {});
  const create = async () => {
    const key = keyInput.value;
    if (!key) {
      noteArea.replaceChildren(h("div", { class: "note error", role: "alert" }, h("span", { class: "text" }, "Give the key, as stored (with its app id prefix, e.g. myapp||order-1).")));
      return;
    }
    let body;
    try {
      body = writeBody(kindSelect.value, textArea.value, ttlInput.value, { firstWrite: true });
    } catch (e) {
      noteArea.replaceChildren(h("div", { class: "note error", role: "alert" }, h("span", { class: "text" }, e.message)));
      return;
    }
    try {
      await api("PUT", `stores/${enc(store)}/keys/${enc(key)}`, body);
      location.hash = keyHash(store, key);
    } catch (e) {
      const exists = e.status === 409;
      noteArea.replaceChildren(h("div", { class: "note error", role: "alert" },
        h("span", { class: "text" }, exists ? "A key with this name exists already: nothing was changed." : e.message),
        exists ? h("a", { class: "button", href: keyHash(store, key) }, "Open it") : null));
    }
  };
  main.append(
    h("h1", {}, "New key"),
    h("p", { class: "muted" }, `In ${store}. The key is the key as stored: an app's keys start with its app id and ||.`),
    noteArea,
    h("div", { class: "panel" }, h("div", { class: "panel-body" },
      h("div", { class: "form-grid" }, h("label", {}, "Key", keyInput), h("label", {}, "As", kindSelect), h("label", {}, "TTL (seconds)", ttlInput)),
      textArea,
      h("div", { class: "actions" },
        h("a", { class: "button", href: storeHash(store, { prefix }) }, "Cancel"),
        h("button", { type: "button", id: "create", class: "primary", onclick: create }, "Create"))))
  );
  keyInput.focus();
  keyInput.setSelectionRange(prefix.length, prefix.length); // go on typing after the prefix
}

// ---------------------------------------------------------------------------------------------
// #/~feed  state API calls as they happen (HTTP and gRPC), by long-polling /devinit/v1/events.
// The server records only while someone polls, so the feed runs only while this view is open.

const feed = { running: false };

function feedView(main) {
  const abort = new AbortController();
  let paused = false;
  let next = null;
  const tbody = h("tbody", {});
  const pauseButton = h("button", { type: "button", id: "feed-pause" }, "Pause");
  const status = h("span", { class: "muted", id: "feed-status" }, "Connecting…");
  const empty = h("tr", { class: "waiting" }, h("td", { colspan: 7, class: "empty" }, "Waiting for state API calls… (make one: the feed shows calls from now on)"));
  tbody.append(empty);
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
  });
  const storePrefix = (storeName) => {
    const s = stores && stores.stores.find((x) => x.name === storeName);
    return s ? s.prefix : null;
  };
  main.append(
    h("h1", {}, "Live feed"),
    h("p", { class: "muted" }, "Calls to the Dapr state API over HTTP and gRPC, newest first. Recording runs while this page is open."),
    h("div", { class: "panel" },
      h("div", { class: "panel-head" }, status, h("span", { class: "spacer" }), pauseButton),
      h("div", { class: "table-wrap" }, h("table", { id: "feed" },
        h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", { class: "hide-narrow" }, "Via"), h("th", { class: "hide-narrow" }, "App id"),
          h("th", {}, "Operation"), h("th", {}, "Key"), h("th", {}, "Status"), h("th", { class: "num" }, "ms"))),
        tbody)))
  );
  const addRow = (e) => {
    empty.remove();
    const t = new Date(e.time * 1000);
    const time = [t.toLocaleTimeString([], { hour12: false }), h("span", { class: "millis" }, `.${String(t.getMilliseconds()).padStart(3, "0")}`)];
    const prefix = storePrefix(e.store);
    const full = e.key === null ? null : (prefix || "") + e.key;
    const keyCell = e.key === null ? h("span", { class: "muted" }, "—")
      : h("a", { href: keyHash(e.store, full), title: `${full} in ${e.store}` }, e.key);
    tbody.prepend(
      h("tr", { class: "fresh feed-row", "data-key": e.key, "data-operation": e.operation },
        h("td", { class: "mono" }, time),
        h("td", { class: "hide-narrow" }, h("span", { class: "proto" }, e.protocol === "grpc" ? "gRPC" : "HTTP")),
        h("td", { class: "hide-narrow" }, e.appId === null ? h("span", { class: "muted" }, "—") : e.appId),
        h("td", {}, e.operation, h("span", { class: "muted store-name" }, ` ${e.store}`)),
        h("td", { class: "key" }, keyCell, e.keys > 1 ? h("span", { class: "muted" }, ` +${e.keys - 1} more`) : null),
        h("td", { class: e.ok ? "status-ok" : "status-bad" }, e.status),
        h("td", { class: "num" }, e.ms < 10 ? e.ms.toFixed(2) : e.ms.toFixed(0)))
    );
    while (tbody.children.length > FEED_ROWS) tbody.lastElementChild.remove();
  };
  const loop = async () => {
    feed.running = true;
    while (!abort.signal.aborted) {
      try {
        const query = next === null ? "events" : `events?after=${next}&wait=25`;
        const got = await api("GET", query, undefined, abort.signal);
        noteServerTime(got.now);
        if (next !== null && !paused) got.events.forEach(addRow);
        next = got.next;
        status.textContent = paused ? "Paused (calls made meanwhile are skipped)" : "Live: recording state API calls";
        noteLive(true);
      } catch (e) {
        if (e.name === "AbortError") break;
        status.textContent = `Not connected: ${e.message} Retrying…`;
        await new Promise((ok) => setTimeout(ok, 2000));
      }
    }
    feed.running = false;
    noteLive(false);
  };
  loop();
  return { dispose: () => abort.abort() };
}

// ---------------------------------------------------------------------------------------------
// TTLs count down everywhere on the page

function tick() {
  const now = serverNow();
  for (const el of document.querySelectorAll("[data-expire]")) {
    const left = Number(el.dataset.expire) - now;
    el.textContent = left <= 0 ? "expired" : formatLeft(left);
    el.classList.toggle("soon", left < 60);
  }
}

// ---------------------------------------------------------------------------------------------

async function start() {
  setUpTheme();
  setUpTokenDialog();
  const ticket = takeTicketFromFragment();
  if (ticket !== null) await redeemTicket(ticket); // before any call that needs the token
  window.addEventListener("hashchange", render);
  refreshStores();
  setInterval(refreshStores, 5000);
  setInterval(tick, 1000);
  render();
}

start();
