// The wallboard: GET /api/wallboard's figures, kept current by /ws/wallboard's frames.
// No framework, no build step. Everything from the server goes in as text, never HTML.

const SESSION_KEY = "cti.session"; // the sidebar's: a supervisor signed in there is here too
const $ = (id) => document.getElementById(id);

let session = null;
let snapshot = null; // as GET /api/wallboard, merged with every frame since
let clockOffsetMs = 0; // server time − our time, from the frames' "at"
let socket = null;
let retryMs = 1000;
let retryTimer = null;

function readSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (stored?.token && Date.parse(stored.expires_at) > Date.now()) return stored;
  } catch {
    // unreadable: sign in again
  }
  return null;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// -- formatting ------------------------------------------------------------------------
function percent(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value * 100)}%`;
}

function seconds(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value)} s`;
}

function duration(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function serverNow() {
  return (Date.now() + clockOffsetMs) / 1000;
}

function levelOf(value) {
  if (value === null || value === undefined) return "";
  if (value >= 0.8) return "ok";
  return value >= 0.6 ? "warn" : "bad";
}

// -- rendering ---------------------------------------------------------------------------
function figure(label, value, field, level = "") {
  return el(
    "div",
    { class: "wb-figure" },
    el("span", { class: "wb-value", "data-field": field, "data-level": level || null, text: value }),
    el("span", { class: "wb-label", text: label }),
  );
}

function groupTable(title, groups) {
  const names = Object.keys(groups || {}).sort();
  if (!names.length) return el("div");
  const rows = names.map((name) =>
    el(
      "tr",
      { "data-group": name },
      el("td", { text: name }),
      el("td", { "data-field": "waiting", text: String(groups[name].waiting) }),
      el("td", { "data-field": "avg-wait", text: seconds(groups[name].avg_wait_s) }),
    ),
  );
  return el(
    "table",
    { class: "wb-groups", "data-testid": `groups-${title.toLowerCase()}` },
    el("thead", {}, el("tr", {}, el("th", { text: title }), el("th", { text: "Waiting" }), el("th", { text: "Avg wait today" }))),
    el("tbody", {}, ...rows),
  );
}

function queueCard(name, q) {
  const today = q.today || {};
  const rolling = q.rolling_30m || {};
  const agents = q.agents || {};
  const paused = Object.entries(q.paused_by_reason || {})
    .map(([reason, n]) => `${reason} ${n}`)
    .join(", ");
  return el(
    "article",
    { class: "wb-queue", "data-testid": `queue-${name}`, "data-queue": name },
    el("h2", { text: name }),
    el(
      "div",
      { class: "wb-figures" },
      figure("Waiting", String(q.waiting ?? 0), "waiting"),
      figure("Longest wait", q.oldest_wait_since ? duration(serverNow() - q.oldest_wait_since) : "—", "longest"),
      figure("Available", String(agents.available ?? 0), "available"),
      figure(`SL today (${q.sl_threshold_s ?? 20} s)`, percent(today.service_level), "sl-today", levelOf(today.service_level)),
      figure("SL 30 min", percent(rolling.service_level), "sl-rolling", levelOf(rolling.service_level)),
      figure("ASA today", seconds(today.asa_s), "asa"),
    ),
    el(
      "p",
      { class: "wb-line" },
      "Offered ", el("b", { "data-field": "offered", text: String(today.offered ?? 0) }),
      " · answered ", el("b", { "data-field": "answered", text: String(today.answered ?? 0) }),
      " · abandoned ", el("b", { "data-field": "abandoned", text: String(today.abandoned ?? 0) }),
      ` (short ≤ ${q.short_abandon_s ?? 5} s: `, el("b", { "data-field": "short-abandoned", text: String(today.short_abandoned ?? 0) }),
      ") · abandon rate ", el("b", { "data-field": "abandon-rate", text: percent(today.abandon_rate) }),
    ),
    el(
      "p",
      { class: "wb-line" },
      "Ringing ", el("b", { "data-field": "ringing", text: String(agents.ringing ?? 0) }),
      " · on call ", el("b", { "data-field": "on-call", text: String((agents.on_call ?? 0) + (agents.on_hold ?? 0)) }),
      " · wrap-up ", el("b", { "data-field": "wrap-up", text: String(agents.wrap_up ?? 0) }),
      " · paused ", el("b", { "data-field": "paused", text: String(agents.paused ?? 0) }),
      paused ? ` (${paused})` : "",
    ),
    groupTable("Tier", q.tiers),
    groupTable("Rule", q.rules),
  );
}

function agentRow(name, a) {
  const now = serverNow();
  const call = a.call;
  const state = a.state ? a.state.replace("_", " ") : "—";
  return el(
    "tr",
    { "data-testid": `agent-${name}`, class: a.pause_over_max ? "wb-over" : null },
    el("td", { text: name }),
    el("td", { class: `wb-state-${a.state}`, "data-field": "state", text: a.reason ? `${state} (${a.reason})` : state }),
    el("td", { "data-field": "since", "data-since": a.since ?? "", text: a.since ? duration(now - a.since) : "—" }),
    el(
      "td",
      { "data-field": "call", "data-talk-since": call?.talk_since ?? "" },
      call ? `${call.queue ?? ""} ${call.tier ?? ""} ${duration(now - call.talk_since)}` : "",
    ),
    el("td", { "data-field": "handled", text: String(a.handled_today ?? 0) }),
  );
}

function render() {
  if (!snapshot) return;
  const names = Object.keys(snapshot.queues || {}).sort();
  $("wb-queues").replaceChildren(...names.map((name) => queueCard(name, snapshot.queues[name])));
  const agents = Object.keys(snapshot.agents || {}).sort();
  $("wb-agent-rows").replaceChildren(...agents.map((name) => agentRow(name, snapshot.agents[name])));
  $("wb-day").textContent = snapshot.day ? `${snapshot.day} (${snapshot.timezone ?? ""})` : "";
  $("wb-formula").textContent = snapshot.formula || "";
}

// Ticking: the longest waits and times in state move every second without a frame.
function tick() {
  if (!snapshot) return;
  const now = serverNow();
  for (const card of document.querySelectorAll("[data-queue]")) {
    const q = snapshot.queues[card.dataset.queue];
    const cell = card.querySelector('[data-field="longest"]');
    if (q && cell) cell.textContent = q.oldest_wait_since ? duration(now - q.oldest_wait_since) : "—";
  }
  for (const cell of document.querySelectorAll("[data-since]")) {
    const since = Number(cell.dataset.since);
    if (since) cell.textContent = duration(now - since);
  }
}

// -- data ----------------------------------------------------------------------------------
function setConnection(state, text) {
  const conn = $("wb-conn");
  conn.dataset.state = state;
  conn.textContent = text;
}

function merge(frame) {
  const at = frame.at ?? frame.snapshot?.at;
  if (at) clockOffsetMs = at * 1000 - Date.now();
  if (frame.type === "snapshot") {
    snapshot = frame.snapshot;
  } else if (frame.type === "wallboard" && snapshot) {
    for (const [key, value] of Object.entries(frame)) {
      if (!["type", "queues", "agents"].includes(key)) snapshot[key] = value;
    }
    Object.assign(snapshot.queues, frame.queues || {});
    Object.assign(snapshot.agents, frame.agents || {});
  }
  render();
}

async function forbidden() {
  const response = await fetch("/api/wallboard", {
    headers: { Authorization: `Bearer ${session.token}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401) {
    signOut();
    return true;
  }
  if (response.status === 403) {
    $("wb-forbidden").hidden = false;
    setConnection("offline", "Not allowed");
    return true;
  }
  return false;
}

function connect() {
  clearTimeout(retryTimer);
  const url = new URL("/ws/wallboard", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", session.token);
  socket = new WebSocket(url);
  socket.onopen = () => {
    retryMs = 1000;
    setConnection("live", "Live");
  };
  socket.onmessage = (message) => {
    try {
      merge(JSON.parse(message.data));
    } catch {
      // a frame we cannot read: the next snapshot puts things right
    }
  };
  socket.onclose = async (event) => {
    socket = null;
    if (!session) return;
    setConnection("offline", "Reconnecting…");
    if (event.code === 4401 || (await forbidden())) return;
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  };
}

// -- sign in, TV mode --------------------------------------------------------------------------
function showLogin(message = "") {
  $("wb-view").hidden = true;
  $("wb-login-view").hidden = false;
  $("wb-login-error").textContent = message;
  $("wb-username").focus();
}

function start() {
  $("wb-login-view").hidden = true;
  $("wb-view").hidden = false;
  $("wb-forbidden").hidden = true;
  connect();
}

function signOut(message = "") {
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  if (socket) socket.close();
  clearTimeout(retryTimer);
  showLogin(message);
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("wb-username").value.trim().toLowerCase();
  const password = $("wb-password").value;
  try {
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const data = await response.json();
    if (!response.ok) {
      $("wb-login-error").textContent =
        response.status === 401 ? "Wrong username or password." : data.message || "Refused.";
      return;
    }
    session = { token: data.token, expires_at: data.expires_at, agent: data.agent };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    $("wb-password").value = "";
    start();
  } catch {
    $("wb-login-error").textContent = "Cannot reach the server.";
  }
}

function setTv(on) {
  document.documentElement.classList.toggle("tv", on);
  if (on && document.documentElement.requestFullscreen && !document.fullscreenElement) {
    document.documentElement.requestFullscreen().catch(() => {});
  } else if (!on && document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  }
}

$("wb-login-form").addEventListener("submit", onLogin);
$("wb-sign-out").addEventListener("click", () => signOut());
$("wb-tv").addEventListener("click", () => setTv(!document.documentElement.classList.contains("tv")));
document.addEventListener("fullscreenchange", () => {
  if (!document.fullscreenElement) document.documentElement.classList.remove("tv");
});
if (new URLSearchParams(location.search).get("tv") === "1") document.documentElement.classList.add("tv");
setInterval(tick, 1000);

session = readSession();
if (session) start();
else showLogin();
