/**
 * The agent's screen-pop sidebar: sign-in, live pops, notes and disposition, call
 * control, and the supervisor's team view. Plain ES module, no framework, no build.
 *
 * Why it is shaped this way:
 *
 * - The WebSocket (/ws) is the only source of call news. The page remembers the last
 *   stream id it handled and reconnects with `after=<id>`, so a dropped network loses
 *   nothing and doubles nothing (the server replays from there, in order). The frames
 *   that arrive in the first burst after a *re*connect are what happened while the
 *   page was away: they are listed in "While you were disconnected". Finding that
 *   burst by a quiet gap, not by comparing clocks, keeps it right when the agent's PC
 *   clock is off.
 * - A new tab connects without `after` and gets the newest entries of the agent's
 *   stream: it rebuilds the current call from them (without announcing old news). A
 *   reconnect whose `after` the server no longer holds (streams keep an hour; Redis may
 *   restart empty) gets a `resync` frame and then that same snapshot: the page takes it
 *   as a new tab would, its own cards pruned by the same rules as replayed ones.
 * - Notes and disposition are saved while the agent types (debounced PATCH with the
 *   version read). The document keeps one note per writer, so a colleague's note is
 *   never in the way of ours; what can be overwritten is a field both touched (the
 *   disposition, or our own note written from another tab). Those show a conflict
 *   panel with both texts and the agent decides; nothing is overwritten silently.
 * - The DOM of a card is built once and then updated in place, so a live refresh
 *   never steals the caret from the note the agent is typing.
 * - All text from the server goes in through textContent, never innerHTML.
 */

const SESSION_KEY = "cti.session";
const DISMISSED_KEY = "cti.dismissed";
const PAUSE_KEY = "cti.pause";
const TARGETS_KEY = "cti.transferTargets";

const SAVE_DELAY_MS = 600;
const CATCH_UP_QUIET_MS = 400;
const CATCH_UP_MAX_MS = 4000;
const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const TOO_MANY_TABS_RETRY_MS = 30_000;
const TEAM_REFRESH_MS = 5_000;
const REPLAY_RINGING_MAX_AGE_S = 120;
const REPLAY_ENDED_MAX_AGE_S = 4 * 3600;
const MISSED_SHOWN = 20;
const FEED_KEPT = 30;

// The limits of cti/calldata/document.py and cti/calls/control.py, checked here too so
// the agent hears about a mistake while typing rather than from a refused save.
const NOTE_MAX = 4000;
const DISPOSITION_MAX = 64;
const DISPOSITION_RE = /^[A-Za-z0-9_./-](?:[A-Za-z0-9 _./-]*[A-Za-z0-9_./-])?$/;
const TARGET_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

/** Build an element. Props: class, text, testid, on<event>, anything else an attribute. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

let uniqueCounter = 0;
const uid = (prefix) => `${prefix}-${++uniqueCounter}`;

function setText(el, text) {
  const value = text ?? "";
  if (el.textContent !== value) el.textContent = value;
}

function show(el, visible) {
  if (el.hidden === !visible) return;
  el.hidden = !visible;
}

function capitalize(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}

function humanize(key) {
  return capitalize(String(key).replace(/[_.-]+/g, " "));
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const timeSecondsFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric",
  month: "short",
  hour: "2-digit",
  minute: "2-digit",
});
let languageNames = null;
try {
  languageNames = new Intl.DisplayNames(undefined, { type: "language" });
} catch {
  languageNames = null;
}

/** A Date from an ISO string or epoch seconds (events carry `at` in seconds). */
function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function fmtTime(value, seconds = false) {
  const date = toDate(value);
  if (!date) return "";
  return (seconds ? timeSecondsFormat : timeFormat).format(date);
}

function fmtDateTime(value) {
  const date = toDate(value);
  if (!date) return "";
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? `Today ${timeFormat.format(date)}`
    : dateTimeFormat.format(date);
}

function fmtDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

function languageName(code) {
  if (!code) return "";
  try {
    return languageNames?.of(code) ?? code;
  } catch {
    return code;
  }
}

/** "PJSIP/2001" → "2001": how agents name each other and what transfer targets take. */
function extension(device) {
  if (!device) return "";
  const slash = String(device).lastIndexOf("/");
  return slash >= 0 ? String(device).slice(slash + 1) : String(device);
}

/** The PBX a device names (PJSIP/2001@b → "b"; "" on the home PBX: cti.pbx). */
function pbxOf(device) {
  const m = /@([a-z][a-z0-9_]{0,15})$/.exec(String(device || ""));
  return m ? m[1] : "";
}

/** The extension as its own PBX dials it (PJSIP/2001@b → "2001"). */
function bareExtension(device) {
  const pbx = pbxOf(device);
  const ext = extension(device);
  return pbx ? ext.slice(0, ext.length - pbx.length - 1) : ext;
}

/** A device as a person reads it: its extension, and its PBX when not the home one. */
function deviceLabel(device) {
  const pbx = pbxOf(device);
  return pbx ? `${bareExtension(device)} · PBX ${pbx}` : extension(device);
}

function sameDevice(a, b) {
  return Boolean(a) && Boolean(b) && String(a).toLowerCase() === String(b).toLowerCase();
}

/** Stream ids are "<ms>-<seq>"; compare them as numbers. */
function compareIds(a, b) {
  const [am, as] = String(a).split("-").map(Number);
  const [bm, bs] = String(b).split("-").map(Number);
  return am - bm || (as || 0) - (bs || 0);
}

function announce(text, urgent = false) {
  const region = urgent ? $("announce-pop") : $("announce");
  region.textContent = "";
  // A separate task, so that a repeated message is announced again.
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

// ---------------------------------------------------------------------------------
// Session and HTTP

class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

let session = null; // {token, expires_at, agent: {username, display_name, endpoint, role}}
let expiryTimer = null;

function readSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (stored?.token && stored.agent && Date.parse(stored.expires_at) > Date.now()) return stored;
  } catch {
    // unreadable: start over
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network", "No connection to the server.", null);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401 && session) {
    signOut("Your session has ended. Please sign in again.");
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      data?.error ?? `http_${response.status}`,
      data?.message ?? `The server answered ${response.status}.`,
      data,
    );
  }
  return data ?? {};
}

// ---------------------------------------------------------------------------------
// Sign in / out

function showLogin(message = "") {
  show($("app-view"), false);
  show($("login-view"), true);
  document.title = "Sign in — CTI sidebar";
  setText($("login-error"), message);
  const username = $("login-username");
  if (!username.value) username.focus();
  else $("login-password").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("login-username").value.trim().toLowerCase(); // usernames are lower case
  const password = $("login-password").value;
  const error = $("login-error");
  if (!username || !password) {
    setText(error, "Enter your username and password.");
    (username ? $("login-password") : $("login-username")).focus();
    return;
  }
  const button = $("login-submit");
  button.disabled = true;
  setText(button, "Signing in…");
  setText(error, "");
  try {
    const data = await api("POST", "/api/login", { username, password });
    session = { token: data.token, expires_at: data.expires_at, agent: data.agent };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    $("login-password").value = "";
    startApp();
  } catch (err) {
    if (err.status === 401) setText(error, "Wrong username or password.");
    else if (err.status === 0) setText(error, "Cannot reach the server. Check your network.");
    else setText(error, err.message);
    $("login-password").select();
  } finally {
    button.disabled = false;
    setText(button, "Sign in");
  }
}

function signOut(message = "") {
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(PAUSE_KEY);
  clearTimeout(expiryTimer);
  stopSocket();
  stopTeam();
  for (const call of calls.values()) clearTimeout(call.saveTimer);
  calls.clear();
  $("calls").replaceChildren();
  missed.items = [];
  renderMissed();
  setBanner("");
  renderIdle();
  showLogin(message);
}

function isSupervisor() {
  return session?.agent?.role === "supervisor";
}

function isMe(writer) {
  const agent = session?.agent;
  return Boolean(agent) && (writer === agent.username || sameDevice(writer, agent.endpoint));
}

function startApp() {
  show($("login-view"), false);
  show($("app-view"), true);
  renderWho();
  renderPause();
  loadPauseReasons();
  renderIdle();
  clearTimeout(expiryTimer);
  const left = Date.parse(session.expires_at) - Date.now();
  expiryTimer = setTimeout(
    () => signOut("Your session has expired. Please sign in again."),
    Math.min(Math.max(left, 0), 2 ** 31 - 1),
  );
  if (isSupervisor()) startTeam();
  else show($("team"), false);
  api("GET", "/api/me")
    .then((me) => {
      const agent = me.agent ?? me;
      if ("agent_state" in me) onAgentState(me.agent_state);
      if (session && agent?.username) {
        session.agent = { ...session.agent, ...agent };
        sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
        renderWho();
      }
    })
    .catch(() => {
      // Offline or a restart: the socket's own retries say so.
    });
  connect();
}

function renderWho() {
  const agent = session.agent;
  setText($("agent-name"), agent.display_name || agent.username);
  setText($("agent-endpoint"), deviceLabel(agent.endpoint));
  $("agent-name").title = `${agent.display_name} (${agent.username}, ${agent.role})`;
}

// ---------------------------------------------------------------------------------
// Pause / unpause

function renderPause() {
  let pause = null;
  try {
    pause = JSON.parse(sessionStorage.getItem(PAUSE_KEY) || "null");
  } catch {
    pause = null;
  }
  const chip = $("pause-state");
  const toggle = $("pause-toggle");
  if (pause?.paused) {
    setText(chip, pause.reason ? `Paused · ${humanize(pause.reason)}` : "Paused");
    chip.className = "chip chip-paused";
    setText(toggle, "Resume");
    toggle.setAttribute("aria-expanded", "false");
    toggle.removeAttribute("aria-controls");
  } else {
    setText(chip, "Available");
    chip.className = "chip chip-available";
    setText(toggle, "Pause");
    toggle.setAttribute("aria-controls", "pause-form");
  }
  toggle.dataset.paused = pause?.paused ? "true" : "false";
}

async function setPaused(paused, reason) {
  const toggle = $("pause-toggle");
  toggle.disabled = true;
  setText($("presence-error"), "");
  try {
    await api("POST", "/api/agent/pause", paused ? { paused, reason } : { paused });
    sessionStorage.setItem(PAUSE_KEY, JSON.stringify({ paused, reason: paused ? reason : null }));
    renderPause();
    announce(paused ? `Paused: ${humanize(reason)}` : "Available for calls");
    closePauseForm();
  } catch (err) {
    setText($("presence-error"), err.message);
  } finally {
    toggle.disabled = false;
  }
}

/** Options of a select, keeping its choice if it is still offered. `options`: [value, label, title?]. */
function fillSelect(select, options) {
  const kept = select.value;
  select.replaceChildren(
    ...options.map(([value, label, title]) => h("option", { value, title }, label)),
  );
  if (options.some(([value]) => value === kept)) select.value = kept;
}

function reasonOption(reason) {
  const limit = reason.max_minutes ? `at most ${reason.max_minutes} min` : "no limit";
  const kind = reason.productive ? "productive" : "not productive";
  return [reason.name, humanize(reason.name), `${kind}, ${limit}`];
}

/** The Pause button offers the routing plan's reasons (the server refuses others). */
async function loadPauseReasons() {
  try {
    const data = await api("GET", "/api/pause-reasons");
    const reasons = Array.isArray(data.pause_reasons) ? data.pause_reasons : [];
    fillSelect($("pause-reason"), reasons.map(reasonOption));
    $("pause-form").querySelector("[type=submit]").disabled = reasons.length === 0;
    if (!reasons.length) setText($("presence-error"), "No pause reasons are set up.");
  } catch (err) {
    if (session) setText($("presence-error"), `Pause reasons not loaded: ${err.message}`);
  }
}

function closePauseForm() {
  show($("pause-form"), false);
  $("pause-toggle").setAttribute("aria-expanded", "false");
}

function onPauseToggle() {
  if ($("pause-toggle").dataset.paused === "true") {
    setPaused(false);
    return;
  }
  const form = $("pause-form");
  const open = form.hidden;
  show(form, open);
  $("pause-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("pause-reason").focus();
}

// ---------------------------------------------------------------------------------
// The WebSocket: connection state, backoff, catch-up

const conn = {
  ws: null,
  lastId: null,
  attempt: 0,
  retryTimer: null,
  retryAt: 0,
  countdownTimer: null,
  pingTimer: null,
  pongTimer: null,
  everConnected: false,
  greeted: false,
  state: "offline",
  stopped: true,
};

/** The first burst of frames after hello: replay (first connect) or missed (reconnect). */
let catchUp = null;

/** The state is announced (role=status); the countdown beside it is not, or a screen
 * reader would read it out every second. */
function setConnState(state, text, countdown = "") {
  conn.state = state;
  const box = $("connection");
  box.dataset.state = state;
  setText($("connection-text"), text);
  setText($("connection-retry"), countdown);
  show($("reconnect-now"), state !== "connected" && Boolean(session));
}

function connect() {
  if (!session) return;
  conn.stopped = false;
  clearTimeout(conn.retryTimer);
  clearInterval(conn.countdownTimer);
  if (conn.ws) return;
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", session.token);
  if (conn.lastId) url.searchParams.set("after", conn.lastId);
  setConnState("reconnecting", conn.everConnected ? "Reconnecting…" : "Connecting…");
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  conn.ws = ws;
  conn.greeted = false;
  ws.onmessage = (message) => {
    if (conn.ws === ws) onFrame(message.data);
  };
  ws.onclose = (event) => {
    if (conn.ws !== ws) return;
    conn.ws = null;
    onSocketClosed(event.code);
  };
}

/** Drop the socket now (without waiting for a close handshake the network cannot carry). */
function dropSocket() {
  const ws = conn.ws;
  conn.ws = null;
  stopHeartbeat();
  if (ws) {
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close(4000, "client going away");
    } catch {
      // already closing
    }
  }
}

function stopSocket() {
  conn.stopped = true;
  dropSocket();
  clearTimeout(conn.retryTimer);
  clearInterval(conn.countdownTimer);
  endCatchUp(true);
  conn.lastId = null;
  conn.everConnected = false;
  conn.attempt = 0;
}

function onSocketClosed(code) {
  stopHeartbeat();
  endCatchUp();
  if (conn.stopped || !session) return;
  if (code === 4401) {
    signOut("Your session has expired. Please sign in again.");
    return;
  }
  if (code === 4429) {
    setBanner(
      "You already have 3 sidebars open. Close one of them; this one retries in 30 seconds.",
    );
    scheduleReconnect(TOO_MANY_TABS_RETRY_MS);
    return;
  }
  if (!conn.greeted) {
    // Refused before hello: maybe our token is no longer good. A 401 here signs out.
    api("GET", "/api/me").catch(() => {});
  }
  scheduleReconnect();
}

function scheduleReconnect(delay) {
  clearTimeout(conn.retryTimer);
  clearInterval(conn.countdownTimer);
  if (delay === undefined) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** conn.attempt);
    delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // jitter: no stampede
    conn.attempt += 1;
  }
  conn.retryAt = Date.now() + delay;
  const tick = () => {
    const seconds = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
    if (!navigator.onLine) setConnState("offline", "Offline", "waiting for the network");
    else setConnState("reconnecting", "Reconnecting…", `in ${seconds} s`);
  };
  tick();
  conn.countdownTimer = setInterval(tick, 1000);
  conn.retryTimer = setTimeout(connect, delay);
}

function onFrame(raw) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch {
    return;
  }
  clearTimeout(conn.pongTimer); // any frame proves the socket is alive
  conn.pongTimer = null;
  if (message.type === "hello") {
    onHello();
  } else if (message.type === "resync") {
    onResync();
  } else if (message.type === "event" && message.event) {
    if (message.id) {
      if (conn.lastId && compareIds(message.id, conn.lastId) <= 0) return; // seen already
      conn.lastId = message.id;
    }
    const ctx = { replay: catchUp?.kind === "replay", missed: catchUp?.kind === "missed" };
    handleEvent(message.event, ctx);
    if (catchUp) {
      if (ctx.missed) catchUp.items.push(message.event);
      bumpCatchUp();
    }
  }
}

function onHello() {
  conn.greeted = true;
  conn.attempt = 0;
  setBanner("");
  setConnState("connected", "Connected");
  startHeartbeat();
  endCatchUp(true);
  catchUp = {
    kind: conn.everConnected ? "missed" : "replay",
    items: [],
    quiet: null,
    max: setTimeout(() => endCatchUp(), CATCH_UP_MAX_MS),
  };
  bumpCatchUp();
  conn.everConnected = true;
  // Saves that failed while offline go out again now.
  for (const call of calls.values()) {
    if (call.saveFailed) scheduleSave(call, 0);
    if (!call.doc && call.loadError?.retry) loadDoc(call);
  }
}

/** What we missed is no longer on the server (older than its retention, or Redis
 * restarted empty): the snapshot a new tab gets follows, so take it as a new tab would.
 * The cards already here are not dropped (a call in progress or waiting for its
 * disposition must not vanish because Redis lost its stream): they are treated like
 * replayed ones, so the same rules as a new tab's prune them once the snapshot is in
 * (old news goes, a wrapped-up call goes); cards with typing not yet saved are left alone. */
function onResync() {
  conn.lastId = null;
  endCatchUp(true);
  const unsaved = new Set(unsavedCalls());
  for (const call of calls.values()) {
    if (!unsaved.has(call)) call.fromReplay = true;
  }
  team.feed = [];
  catchUp = {
    kind: "replay",
    items: [],
    quiet: null,
    max: setTimeout(() => endCatchUp(), CATCH_UP_MAX_MS),
  };
  bumpCatchUp();
  const text = "Some call updates from while you were away are no longer on the server: the page was refreshed from the current ones.";
  setBanner(text);
  announce(text);
}

function bumpCatchUp() {
  clearTimeout(catchUp.quiet);
  catchUp.quiet = setTimeout(() => endCatchUp(), CATCH_UP_QUIET_MS);
}

function endCatchUp(silently = false) {
  if (!catchUp) return;
  const done = catchUp;
  catchUp = null;
  clearTimeout(done.quiet);
  clearTimeout(done.max);
  if (silently) return;
  if (done.kind === "missed" && done.items.length) {
    missed.items = [...missed.items, ...done.items];
    renderMissed();
    announce(`While you were disconnected: ${done.items.length} update(s).`);
  }
  if (done.kind === "replay") {
    pruneReplayed();
    if (isSupervisor()) {
      renderFeed();
      refreshTeam();
    }
  }
}

function startHeartbeat() {
  stopHeartbeat();
  conn.pingTimer = setInterval(() => {
    const ws = conn.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: "ping" }));
    clearTimeout(conn.pongTimer);
    conn.pongTimer = setTimeout(() => {
      // Half-open: the network died without telling us. Start over.
      dropSocket();
      onSocketClosed(4001);
    }, PONG_TIMEOUT_MS);
  }, PING_EVERY_MS);
}

function stopHeartbeat() {
  clearInterval(conn.pingTimer);
  clearTimeout(conn.pongTimer);
  conn.pingTimer = null;
  conn.pongTimer = null;
}

function onOffline() {
  if (!session) return;
  // The browser knows the network is gone: do not wait for TCP to find out.
  dropSocket();
  endCatchUp();
  clearTimeout(conn.retryTimer);
  clearInterval(conn.countdownTimer);
  setConnState("offline", "Offline", "waiting for the network");
  // Keep trying slowly in case the browser is wrong about being offline.
  conn.retryTimer = setTimeout(connect, BACKOFF_MAX_MS);
}

function onOnline() {
  if (!session || conn.ws) return;
  conn.attempt = 0;
  connect();
}

function setBanner(text) {
  const banner = $("banner");
  setText(banner, text);
  show(banner, Boolean(text));
}

// ---------------------------------------------------------------------------------
// "While you were disconnected"

const missed = { items: [] };

function renderMissed() {
  const section = $("missed");
  const list = $("missed-list");
  const items = missed.items;
  show(section, items.length > 0);
  const shown = items.slice(-MISSED_SHOWN);
  list.replaceChildren(
    ...shown.map((ev) =>
      h(
        "li",
        { testid: "missed-item", "data-event": ev.event, "data-call-key": ev.call_key },
        h("time", { class: "missed-time", datetime: toDate(ev.at)?.toISOString() ?? "" }, fmtTime(ev.at, true)),
        " ",
        describeEvent(ev),
      ),
    ),
  );
  if (items.length > shown.length) {
    list.prepend(h("li", { class: "muted" }, `…and ${items.length - shown.length} earlier update(s)`));
  }
}

/** Who the call is with, as far as this page knows. */
function callerName(callKey) {
  const call = calls.get(callKey);
  const doc = call?.doc ?? team.docs.get(callKey)?.doc;
  if (!doc) return "";
  return doc.customer?.name || doc.ani || "";
}

/** How an agent is named in a sentence: "You", or their extension. */
function agentName(device) {
  if (!device) return "";
  return sameDevice(device, session?.agent?.endpoint) ? "You" : extension(device);
}

function describeEvent(ev) {
  const who = callerName(ev.call_key);
  const from = who ? ` from ${who}` : "";
  const queue = ev.queue ? ` (${ev.queue})` : "";
  const agent = agentName(ev.agent);
  switch (ev.event) {
    case "queued":
      return `Call${from} queued in ${ev.queue ?? "a queue"}`;
    case "ringing":
      return isSupervisor() && !sameDevice(ev.agent, session.agent.endpoint)
        ? `${agent} ringing: call${from}${queue}`
        : `Your phone rang: call${from}${queue}`;
    case "ring_stopped":
      return `Stopped ringing${agent && agent !== "You" ? ` at ${agent}` : ""}${from}`;
    case "connected":
      return agent === "You"
        ? `Connected with ${who || "the caller"}`
        : `${agent || "Agent"} connected${who ? ` with ${who}` : ""}`;
    case "left":
      return `${agent || "Agent"} left the call${who ? ` with ${who}` : ""}`;
    case "consult":
      return `${agent || "Agent"} ${agent === "You" ? "consulted" : "consulting"} ${ev.to ?? ""}`.trim();
    case "held":
      return `Caller${who ? ` ${who}` : ""} put on hold`;
    case "unheld":
      return `Caller${who ? ` ${who}` : ""} taken off hold`;
    case "transferred":
      return `Call${from} transferred (${ev.kind ?? "?"}) ${ev.from ? `by ${agentName(ev.from).replace(/^You$/, "you")} ` : ""}to ${ev.to ?? "?"}`;
    case "abandoned":
      return `Caller hung up while waiting${queue}`;
    case "queue_left":
      return `Caller left the queue${queue}${ev.reason === "exited" ? " unanswered" : ""}`;
    case "ended":
      return `Call${from} ended`;
    case "data_changed":
      return `Notes${from ? ` of the call${from}` : ""} updated by ${ev.by ?? "someone"}`;
    default:
      return `${ev.event}${from}`;
  }
}

// ---------------------------------------------------------------------------------
// Calls: what the events say, and the cards that show it

/** call_key → call state (see newCall). */
const calls = new Map();
const dismissed = new Set(readDismissed());

function readDismissed() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(DISMISSED_KEY) || "[]");
    return Array.isArray(stored) ? stored : [];
  } catch {
    return [];
  }
}

function rememberDismissed(key) {
  dismissed.add(key);
  const keep = [...dismissed].slice(-200);
  sessionStorage.setItem(DISMISSED_KEY, JSON.stringify(keep));
}

function forgetDismissed(key) {
  if (!dismissed.delete(key)) return;
  sessionStorage.setItem(DISMISSED_KEY, JSON.stringify([...dismissed]));
}

/** Is this per-agent event about me? An agent's stream holds only theirs; a
 * supervisor's socket follows everyone's. */
function aboutMe(ev) {
  if (!isSupervisor()) return true;
  return sameDevice(ev.agent, session.agent.endpoint);
}

// ---------------------------------------------------------------------------------
// Wrap-up (cti/agents): after a queue call cti holds the agent in wrap-up until they
// save the call's disposition or the time runs out; the page counts it down. The state
// comes from /api/me and then from each agent_state event about this agent.

let wrapupUntil = null;

function onAgentState(state) {
  if (!state || !session || !sameDevice(state.agent, session.agent.endpoint)) return;
  const pending = state.state === "wrap_up" && typeof state.wrapup_until === "number";
  wrapupUntil = pending ? state.wrapup_until : null;
  renderWrapup();
}

function renderWrapup() {
  const el = $("wrapup");
  const left = wrapupUntil === null ? 0 : wrapupUntil - Date.now() / 1000;
  if (left <= 0) {
    show(el, false);
    return;
  }
  setText(el, `Wrap-up: ${fmtDuration(Math.ceil(left))} left. Save the disposition to take calls again.`);
  show(el, true);
}

function handleEvent(ev, ctx) {
  if (ev.event === "agent_state") {
    onAgentState(ev);
    return;
  }
  const key = ev.call_key;
  if (!key) return;
  if (isSupervisor()) onTeamEvent(ev, ctx);
  let call = calls.get(key);
  const mine = aboutMe(ev);
  if (dismissed.has(key)) {
    // Cleared with Done: only a new leg of it (the call coming back to us) shows again.
    const again = mine && !ctx.replay && (ev.event === "ringing" || ev.event === "connected");
    if (!again) return;
    forgetDismissed(key);
  }
  switch (ev.event) {
    case "ringing": {
      if (!mine) return;
      call = call ?? newCall(ev, ctx);
      if (["ended", "left"].includes(call.phase) || !call.phase) {
        call.phase = "ringing";
        call.since = ev.at;
        call.announced = false;
      }
      call.queue = ev.queue ?? call.queue;
      if (!ctx.replay) call.announce = true;
      break;
    }
    case "ring_stopped": {
      if (!mine || !call) return;
      if (call.phase === "ringing") {
        removeCall(call);
        if (!ctx.replay) announce("The call stopped ringing.");
        return;
      }
      break;
    }
    case "connected": {
      if (!mine) return;
      call = call ?? newCall(ev, ctx);
      call.phase = "connected";
      call.since = ev.at;
      call.queue = ev.queue ?? call.queue;
      call.transferredAway = false;
      call.consulting = null;
      if (!ctx.replay && !call.announced) call.announce = true;
      break;
    }
    case "consult": {
      if (!mine || !call) return;
      call.consulting = ev.to ?? "";
      break;
    }
    case "held":
    case "unheld": {
      if (!call) return;
      call.held = ev.event === "held";
      break;
    }
    case "transferred": {
      if (!call) return;
      call.transfers.push({ kind: ev.kind, from: ev.from, to: ev.to, at: ev.at });
      call.consulting = null;
      if (sameDevice(ev.from, session.agent.endpoint)) call.transferredAway = true;
      break;
    }
    case "left": {
      if (!mine || !call) return;
      if (call.phase === "ringing") {
        removeCall(call);
        return;
      }
      if (call.phase !== "ended") {
        call.phase = "left";
        call.endedAt = ev.at;
      }
      call.consulting = null;
      break;
    }
    case "ended": {
      if (!call) return;
      if (call.phase === "ringing") {
        // Rang here, never answered here, and it is over: nothing to wrap up.
        removeCall(call);
        return;
      }
      call.phase = "ended";
      call.endedAt = ev.at;
      call.endCause = ev.cause_txt ?? null;
      call.held = false;
      call.consulting = null;
      break;
    }
    case "data_changed": {
      if (!call) return;
      refreshDoc(call, ev.version);
      break;
    }
    default:
      return;
  }
  if (!call || !calls.has(key)) return;
  // A replay may hold a day of calls: load only those still shown once it is over.
  if (!ctx.replay && !call.doc && !call.loading && !call.loadError) loadDoc(call);
  renderCall(call);
  if (call.announce && call.doc) announceCall(call);
}

function newCall(ev, ctx) {
  const call = {
    key: ev.call_key,
    callId: ev.call_id && UUID_RE.test(ev.call_id) ? ev.call_id.toLowerCase() : null,
    phase: null,
    since: ev.at,
    endedAt: null,
    endCause: null,
    queue: ev.queue ?? null,
    held: false,
    consulting: null,
    transfers: [],
    transferredAway: false,
    fromReplay: Boolean(ctx.replay),
    announce: false,
    announced: false,
    doc: null,
    recent: [],
    timeline: [],
    loading: false,
    loadError: null,
    refetch: false,
    // Editing: base = what the server had when the agent began; draft = what they typed.
    base: { note: "", disposition: "" },
    draft: { note: "", disposition: "" },
    saveTimer: null,
    saving: false,
    saveFailed: false,
    conflict: null,
    savedAt: null,
    notice: "",
    el: null,
  };
  call.el = buildCard(call);
  calls.set(call.key, call);
  $("calls").prepend(call.el.root);
  renderIdle();
  return call;
}

function removeCall(call) {
  clearTimeout(call.saveTimer);
  calls.delete(call.key);
  call.el.root.remove();
  renderIdle();
  updateTitle();
}

/** After a first connect's replay: drop what is old news, keep what still needs the agent. */
function pruneReplayed() {
  const now = Date.now() / 1000;
  for (const call of [...calls.values()]) {
    if (!call.fromReplay) continue;
    const age = now - (call.endedAt ?? call.since ?? now);
    if (call.phase === "ringing" && age > REPLAY_RINGING_MAX_AGE_S) removeCall(call);
    else if (["ended", "left"].includes(call.phase) && age > REPLAY_ENDED_MAX_AGE_S) removeCall(call);
    else if (!call.doc && !call.loading) loadDoc(call); // drops it if wrapped up already
  }
  for (const call of calls.values()) {
    if (call.phase === "ringing") {
      call.announce = true; // the agent opened the sidebar while the phone rings
      if (call.doc) announceCall(call);
    }
  }
}

/** A replayed call that is over and already has its disposition needs nothing more. */
function pruneIfWrappedUp(call) {
  if (call.fromReplay && ["ended", "left"].includes(call.phase) && call.doc?.disposition) {
    removeCall(call);
  }
}

function renderIdle() {
  // A supervisor's page is the team view; "no call" would only push it down.
  show($("idle"), calls.size === 0 && !isSupervisor());
  updateTitle();
}

function updateTitle() {
  const live = [...calls.values()].find((c) => c.phase === "ringing" || c.phase === "connected");
  if (!live) {
    document.title = session ? "CTI sidebar" : "Sign in — CTI sidebar";
    return;
  }
  const name = live.doc?.customer?.name || live.doc?.ani || "Caller";
  document.title = `${live.phase === "ringing" ? "Ringing" : "On call"}: ${name} — CTI sidebar`;
}

function announceCall(call) {
  call.announce = false;
  if (call.announced || !["ringing", "connected"].includes(call.phase)) return;
  call.announced = true;
  const doc = call.doc;
  const name = doc?.customer?.name || doc?.ani || "unknown caller";
  const tier = doc?.customer?.tier ? `, ${doc.customer.tier} customer` : "";
  const line = doc?.service ? `, ${doc.service} line` : "";
  announce(`${call.phase === "ringing" ? "Incoming call" : "Call"}: ${name}${tier}${line}.`, true);
}

// ---------------------------------------------------------------------------------
// Call data: load, refresh, save, conflicts

function myNote(doc) {
  return (doc?.notes ?? []).find((note) => isMe(note.by))?.text ?? "";
}

async function loadDoc(call) {
  if (!call.callId) {
    call.loadError = { message: "This call did not go through routing: no caller data.", retry: false };
    renderCall(call);
    return;
  }
  call.loading = true;
  call.loadError = null;
  renderCall(call);
  try {
    const data = await api("GET", `/api/calls/${encodeURIComponent(call.callId)}`);
    if (!calls.has(call.key)) return;
    call.recent = Array.isArray(data.recent) ? data.recent : [];
    call.timeline = Array.isArray(data.timeline) ? data.timeline : [];
    if (!data.call) {
      // Known call, no data stored (yet): the server already waited a moment for the
      // route's data; keep trying a few times rather than show an empty card for good.
      const err = new Error("the caller's data is not stored yet");
      err.status = (call.noDataTries = (call.noDataTries ?? 0) + 1) <= 5 ? 503 : 404;
      throw err;
    }
    if (!call.doc) {
      call.doc = data.call;
      call.base = { note: myNote(data.call), disposition: data.call.disposition ?? "" };
      call.draft = { ...call.base };
    } else {
      applyRemoteDoc(call, data.call);
    }
    renderMissed();
    pruneIfWrappedUp(call);
    if (call.announce) announceCall(call);
  } catch (err) {
    if (!calls.has(call.key) || !session) return;
    const messages = {
      403: "You may not see this call's data.",
      404: "No data for this call.",
    };
    call.loadError = {
      message: messages[err.status] ?? `Caller data not loaded: ${err.message}`,
      retry: err.status === 0 || err.status >= 500,
    };
    if (call.loadError.retry) setTimeout(() => calls.has(call.key) && !call.doc && loadDoc(call), 3000);
  } finally {
    call.loading = false;
    if (calls.has(call.key)) {
      renderCall(call);
      updateTitle();
      if (call.refetch && call.doc) {
        call.refetch = false; // a data_changed came while we were loading
        refreshDoc(call);
      }
    }
  }
}

/** A data_changed event: fetch the new version unless we already have it. */
async function refreshDoc(call, version) {
  if (!call.callId) return;
  if (call.doc && typeof version === "number" && version <= call.doc.version) return;
  if (call.saving || call.loading) {
    call.refetch = true; // after the save/load in flight, so its answer is not misread
    return;
  }
  call.loading = true;
  try {
    const data = await api("GET", `/api/calls/${encodeURIComponent(call.callId)}`);
    if (!calls.has(call.key)) return;
    call.timeline = Array.isArray(data.timeline) ? data.timeline : call.timeline;
    call.recent = Array.isArray(data.recent) ? data.recent : call.recent;
    if (!call.doc) {
      call.doc = data.call;
      call.base = { note: myNote(data.call), disposition: data.call.disposition ?? "" };
      call.draft = { ...call.base };
    } else if (call.saving) {
      call.refetch = true;
    } else {
      applyRemoteDoc(call, data.call);
    }
  } catch {
    // The next event or save brings it.
  } finally {
    call.loading = false;
    if (calls.has(call.key)) {
      renderCall(call);
      if (call.refetch) {
        call.refetch = false;
        refreshDoc(call);
      }
    }
  }
}

/**
 * Take a newer version of the document from the server. Fields the agent has not
 * touched follow it; a field the agent is editing that someone else changed too is a
 * conflict, shown, never resolved silently.
 */
function applyRemoteDoc(call, doc) {
  if (!doc || (call.doc && doc.version <= call.doc.version)) return;
  const remote = { note: myNote(doc), disposition: doc.disposition ?? "" };
  const clashes = [];
  for (const field of ["note", "disposition"]) {
    if (remote[field] === call.base[field]) continue; // unchanged there
    // A disposition is saved trimmed: "Resolved " typed is "Resolved" saved.
    const draft = field === "disposition" ? call.draft[field].trim() : call.draft[field];
    if (draft === call.base[field] || draft === remote[field]) {
      // Not edited here (or edited to the same thing): take theirs.
      call.base[field] = remote[field];
      call.draft[field] = remote[field];
    } else {
      clashes.push(field);
    }
  }
  const before = call.doc;
  call.doc = doc;
  if (clashes.length) {
    openConflict(call, doc, clashes);
  } else if (before && doc.updated_by && !isMe(doc.updated_by)) {
    call.notice = `Updated by ${doc.updated_by} at ${fmtTime(doc.updated_at)}.`;
  }
  syncInputs(call);
}

function scheduleSave(call, delay = SAVE_DELAY_MS) {
  clearTimeout(call.saveTimer);
  call.saveTimer = setTimeout(() => saveNow(call), delay);
  renderSaveStatus(call);
}

function pendingChange(call) {
  const change = {};
  if (call.draft.note !== call.base.note) change.note = call.draft.note;
  if (call.draft.disposition !== call.base.disposition) {
    const value = call.draft.disposition.trim();
    if (value === "" || (value.length <= DISPOSITION_MAX && DISPOSITION_RE.test(value))) {
      if (value !== call.base.disposition) change.disposition = value === "" ? null : value;
    }
  }
  return change;
}

async function saveNow(call) {
  clearTimeout(call.saveTimer);
  call.saveTimer = null;
  if (call.saving || call.conflict || !call.doc || !calls.has(call.key)) return;
  const change = pendingChange(call);
  if (!Object.keys(change).length) {
    renderSaveStatus(call);
    return;
  }
  call.saving = true;
  call.saveFailed = false;
  call.saveError = "";
  renderSaveStatus(call);
  try {
    const data = await api("PATCH", `/api/calls/${encodeURIComponent(call.callId)}`, {
      version: call.doc.version,
      change,
    });
    if ("note" in change) call.base.note = change.note;
    if ("disposition" in change) call.base.disposition = change.disposition ?? "";
    if (!call.doc || data.call.version > call.doc.version) call.doc = data.call;
    call.savedAt = Date.now();
  } catch (err) {
    if (err.code === "stale_version" && err.body?.current) {
      onStale(call, err.body.current);
    } else if (err.status === 0) {
      call.saveFailed = true;
      call.saveError = "Not saved yet: no connection. It is saved when the connection is back.";
    } else if (err.status === 401) {
      return;
    } else {
      call.saveFailed = err.status >= 500;
      call.saveError = `Not saved: ${err.message}`;
      announce(call.saveError);
    }
  } finally {
    call.saving = false;
  }
  if (!calls.has(call.key)) return;
  renderCall(call);
  if (call.refetch && !call.conflict) {
    call.refetch = false;
    refreshDoc(call);
  }
  if (!call.conflict && !call.saveError && Object.keys(pendingChange(call)).length) {
    // Typed more while the save was on its way, or sent again after a harmless 409.
    scheduleSave(call, call.retryNow ? 0 : SAVE_DELAY_MS);
  }
  call.retryNow = false;
  if (call.saveFailed && call.saveError && conn.state === "connected") {
    setTimeout(() => call.saveFailed && scheduleSave(call, 0), 5000);
  }
  if (call.pendingDone && !call.saving && !call.saveTimer) finishDone(call);
}

/**
 * 409: someone saved first. What they changed that we did not touch (say, a colleague's
 * own note) is merged and ours is sent again on top of their version: nothing of theirs
 * is overwritten by that, and the agent is told. A field both changed is a conflict.
 */
function onStale(call, current) {
  applyRemoteDoc(call, current);
  if (call.conflict) return;
  call.notice = `${current.updated_by ?? "A colleague"} saved at the same time; both kept.`;
  call.retryNow = true;
}

function openConflict(call, current, fields) {
  clearTimeout(call.saveTimer);
  call.saveTimer = null;
  call.conflict = {
    by: current.updated_by ?? "someone",
    at: current.updated_at ?? null,
    version: current.version,
    fields,
    theirs: { note: myNote(current), disposition: current.disposition ?? "" },
    mine: { ...call.draft },
  };
  announce(`Conflict: ${call.conflict.by} changed this call while you were typing.`, true);
  renderCall(call);
  call.el.conflict.focus();
}

function resolveConflict(call, keepMine) {
  const conflict = call.conflict;
  if (!conflict) return;
  const chosen = {};
  for (const field of conflict.fields) {
    if (!keepMine) chosen[field] = conflict.theirs[field];
    else if (field === "note") chosen.note = call.el.mergeNote.value;
    else chosen.disposition = call.el.conflictChoice.querySelector("input:checked")?.value ?? "";
  }
  // Their values are now the base: what we send next is a deliberate edit of them.
  for (const field of conflict.fields) {
    call.base[field] = conflict.theirs[field];
    call.draft[field] = chosen[field];
  }
  call.conflict = null;
  syncInputs(call);
  renderCall(call);
  call.el.note.focus();
  scheduleSave(call, 0);
}

function syncInputs(call) {
  const { note, disposition } = call.el;
  if (note.value !== call.draft.note) note.value = call.draft.note;
  if (disposition.value !== call.draft.disposition) disposition.value = call.draft.disposition;
}

// ---------------------------------------------------------------------------------
// Call control

async function callAction(call, path, body, pending, done) {
  const status = call.el.actionStatus;
  status.classList.remove("error");
  setText(status, pending);
  for (const button of call.el.controls.querySelectorAll("button")) button.disabled = true;
  try {
    // By call key: a call that never went through the route (L:<linkedid>) has no
    // call data but can still be transferred or hung up.
    await api("POST", `/api/calls/${encodeURIComponent(call.key)}${path}`, body);
    setText(status, done);
    if (done) announce(done);
    return true;
  } catch (err) {
    status.classList.add("error");
    setText(status, err.status === 0 ? "No connection to the server." : err.message);
    announce(status.textContent);
    return false;
  } finally {
    for (const button of call.el.controls.querySelectorAll("button")) button.disabled = false;
    renderCall(call);
  }
}

function transferTarget(call) {
  const input = call.el.target;
  const target = input.value.trim();
  if (!TARGET_RE.test(target)) {
    call.el.actionStatus.classList.add("error");
    setText(call.el.actionStatus, "Enter a queue or an agent's extension (letters, digits, _ or -).");
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return null;
  }
  input.removeAttribute("aria-invalid");
  rememberTarget(target);
  return target;
}

async function transfer(call, kind) {
  const target = transferTarget(call);
  if (!target) return;
  const ok = await callAction(
    call,
    "/transfer",
    { kind, target },
    kind === "blind" ? `Transferring to ${target}…` : `Calling ${target}…`,
    kind === "blind" ? `Transferred to ${target}.` : "",
  );
  if (ok && kind === "attended") {
    call.consulting = target;
    renderCall(call);
    announce(`Consulting ${target}; the caller is on hold. Complete or cancel the transfer.`);
  }
  if (ok) {
    call.el.transferPanel.hidden = true;
    call.el.transferToggle.setAttribute("aria-expanded", "false");
  }
}

function rememberTarget(target) {
  let targets = [];
  try {
    targets = JSON.parse(localStorage.getItem(TARGETS_KEY) || "[]");
  } catch {
    targets = [];
  }
  targets = [target, ...targets.filter((t) => t !== target)].slice(0, 10);
  localStorage.setItem(TARGETS_KEY, JSON.stringify(targets));
  addTargetOption(target, "recent");
}

function addTargetOption(value, label) {
  const list = $("transfer-targets");
  if (!value || [...list.options].some((o) => o.value === value)) return;
  list.append(h("option", { value }, label));
}

function seedTargets() {
  let targets = [];
  try {
    targets = JSON.parse(localStorage.getItem(TARGETS_KEY) || "[]");
  } catch {
    targets = [];
  }
  for (const target of targets) if (TARGET_RE.test(target)) addTargetOption(target, "recent");
}

// ---------------------------------------------------------------------------------
// The card

const PHASES = {
  ringing: "Ringing",
  connected: "On call",
  left: "You left the call",
  ended: "Call ended",
};

function section(title, testid, ...children) {
  const id = uid("sec");
  return h(
    "section",
    { class: "block", "aria-labelledby": id, testid },
    h("h4", { id, class: "block-title" }, title),
    ...children,
  );
}

function fact(label, testid) {
  const value = h("dd", { testid });
  const row = h("div", { class: "fact" }, h("dt", {}, label), value);
  return { row, value };
}

function buildCard(call) {
  const ids = { name: uid("name"), note: uid("note"), disposition: uid("disp"), target: uid("target") };
  const el = {};
  el.phase = h("span", { class: "chip phase", testid: "call-phase" });
  el.hold = h("span", { class: "chip chip-hold", testid: "call-held", hidden: true }, "On hold");
  el.elapsed = h("span", { class: "elapsed", testid: "call-elapsed", "aria-label": "Time" });
  el.queueChip = h("span", { class: "queue-chip", testid: "call-queue" });

  el.name = h("h3", { class: "cust-name", id: ids.name, testid: "customer-name" });
  el.tier = h("span", { class: "badge tier", testid: "customer-tier" });
  el.status = h("span", { class: "badge status", testid: "customer-status" });
  el.language = h("span", { class: "badge lang", testid: "customer-language" });
  const account = fact("Account", "customer-account");
  const caller = fact("Caller", "caller-ani");
  const line = fact("Called", "call-line");
  el.account = account.value;
  el.accountRow = account.row;
  el.ani = caller.value;
  el.line = line.value;
  el.loadState = h("p", { class: "load-state muted", testid: "load-state" });

  el.rule = h("p", { class: "why-rule", testid: "routing-rule" });
  el.failOpen = h("p", { class: "warn", testid: "fail-open", hidden: true });
  el.why = section("Why you got this call", "why", el.rule, el.failOpen);

  el.ivrList = h("dl", { class: "kv", testid: "ivr" });
  el.ivr = section("What the IVR collected", "ivr-section", el.ivrList);

  el.notesList = h("ol", { class: "notes", testid: "earlier-notes" });
  el.notesSection = section("Notes from earlier agents", "earlier-notes-section", el.notesList);

  el.transfersList = h("ul", { class: "transfers", testid: "transfers" });

  // Conflict panel
  el.conflictText = h("p", { class: "conflict-lead" });
  el.conflictBody = h("div", { class: "conflict-body" });
  el.mergeNote = h("textarea", { class: "input", rows: 4, testid: "conflict-merge", maxlength: NOTE_MAX });
  el.conflictChoice = h("fieldset", { class: "choice", testid: "conflict-choice" });
  el.conflict = h(
    "div",
    { class: "conflict", role: "alert", tabindex: "-1", testid: "conflict", hidden: true },
    h("p", { class: "conflict-title" }, "Changed elsewhere while you typed"),
    el.conflictText,
    el.conflictBody,
    h(
      "div",
      { class: "row" },
      h(
        "button",
        { class: "btn btn-primary btn-small", type: "button", testid: "conflict-save", onclick: () => resolveConflict(call, true) },
        "Save my choice",
      ),
      h(
        "button",
        { class: "btn btn-small", type: "button", testid: "conflict-discard", onclick: () => resolveConflict(call, false) },
        "Keep what is saved",
      ),
    ),
  );

  el.note = h("textarea", {
    id: ids.note,
    class: "input note-input",
    rows: 4,
    maxlength: NOTE_MAX,
    placeholder: "What the caller needs, what you did…",
    testid: "my-note",
  });
  el.noteCount = h("span", { class: "muted small", testid: "note-count", "aria-live": "polite" });
  el.disposition = h("input", {
    id: ids.disposition,
    class: "input",
    list: "dispositions",
    maxlength: DISPOSITION_MAX,
    autocomplete: "off",
    placeholder: "Resolved, Callback scheduled…",
    testid: "disposition",
    "aria-describedby": `${ids.disposition}-err`,
  });
  el.dispositionError = h("p", { id: `${ids.disposition}-err`, class: "error error-small", testid: "disposition-error" });
  el.saveStatus = h("p", { class: "save-status muted small", testid: "save-status" });
  el.notice = h("p", { class: "notice small", testid: "notice", hidden: true });
  el.note.addEventListener("input", () => {
    call.draft.note = el.note.value;
    call.notice = ""; // read by now: the agent has moved on
    renderNoteCount(call);
    if (call.doc && !call.conflict) scheduleSave(call);
  });
  el.disposition.addEventListener("input", () => {
    call.draft.disposition = el.disposition.value;
    renderDispositionError(call);
    if (call.doc && !call.conflict) scheduleSave(call);
  });
  // Leaving a field saves at once: the agent may be about to close the tab.
  el.note.addEventListener("blur", () => call.saveTimer && saveNow(call));
  el.disposition.addEventListener("blur", () => call.saveTimer && saveNow(call));
  el.wrap = h(
    "section",
    { class: "block wrap", "aria-label": "Wrap-up" },
    el.conflict,
    h("div", { class: "label-row" }, h("label", { for: ids.note }, "Your note"), el.noteCount),
    el.note,
    h("label", { for: ids.disposition }, "Disposition"),
    el.disposition,
    el.dispositionError,
    el.saveStatus,
    el.notice,
  );

  // Controls
  el.target = h("input", {
    id: ids.target,
    class: "input",
    list: "transfer-targets",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "Queue or extension, e.g. billing, 2003",
    testid: "transfer-target",
    maxlength: 32,
  });
  el.target.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      transfer(call, "blind");
    }
  });
  el.transferPanel = h(
    "div",
    { class: "transfer-panel", id: uid("xfer"), hidden: true, testid: "transfer-panel" },
    h("label", { for: ids.target }, "Transfer to"),
    el.target,
    h(
      "div",
      { class: "row" },
      h("button", { class: "btn btn-small", type: "button", testid: "transfer-blind", onclick: () => transfer(call, "blind") }, "Blind transfer"),
      h(
        "button",
        { class: "btn btn-small", type: "button", testid: "transfer-attended", onclick: () => transfer(call, "attended") },
        "Consult first",
      ),
    ),
  );
  el.transferToggle = h(
    "button",
    {
      class: "btn btn-small",
      type: "button",
      testid: "transfer-toggle",
      "aria-expanded": "false",
      "aria-controls": el.transferPanel.id,
      onclick: () => {
        const open = el.transferPanel.hidden;
        el.transferPanel.hidden = !open;
        el.transferToggle.setAttribute("aria-expanded", String(open));
        if (open) el.target.focus();
      },
    },
    "Transfer…",
  );
  el.complete = h(
    "button",
    {
      class: "btn btn-primary btn-small",
      type: "button",
      testid: "transfer-complete",
      hidden: true,
      onclick: async () => {
        if (await callAction(call, "/transfer/complete", {}, "Completing the transfer…", "Transfer completed.")) {
          call.consulting = null; // our leg hangs up: the caller and the target talk
          renderCall(call);
        }
      },
    },
    "Complete transfer",
  );
  el.cancel = h(
    "button",
    {
      class: "btn btn-small",
      type: "button",
      testid: "transfer-cancel",
      hidden: true,
      onclick: async () => {
        if (await callAction(call, "/transfer/cancel", {}, "Returning to the caller…", "Back with the caller.")) {
          call.consulting = null;
          renderCall(call);
        }
      },
    },
    "Cancel",
  );
  el.hangupConfirm = h(
    "span",
    { class: "confirm", hidden: true },
    h(
      "button",
      {
        class: "btn btn-danger btn-small",
        type: "button",
        testid: "hangup-confirm",
        onclick: () => {
          el.hangupConfirm.hidden = true;
          el.hangup.hidden = false;
          callAction(call, "/hangup", {}, "Hanging up…", "Hung up.");
        },
      },
      "Yes, hang up",
    ),
    h(
      "button",
      {
        class: "btn btn-link btn-small",
        type: "button",
        onclick: () => {
          el.hangupConfirm.hidden = true;
          el.hangup.hidden = false;
          el.hangup.focus();
        },
      },
      "No",
    ),
  );
  el.hangup = h(
    "button",
    {
      class: "btn btn-danger-outline btn-small",
      type: "button",
      testid: "hangup",
      onclick: () => {
        el.hangup.hidden = true;
        el.hangupConfirm.hidden = false;
        el.hangupConfirm.querySelector("button").focus();
      },
    },
    "Hang up",
  );
  el.consultInfo = h("p", { class: "consult-info small", testid: "consult-info", hidden: true });
  el.actionStatus = h("p", { class: "action-status small", testid: "action-status", role: "status" });
  el.controls = h(
    "section",
    { class: "block controls", "aria-label": "Call control", testid: "controls" },
    h("div", { class: "row" }, el.transferToggle, el.complete, el.cancel, h("span", { class: "spacer" }), el.hangup, el.hangupConfirm),
    el.consultInfo,
    el.transferPanel,
    el.actionStatus,
  );
  el.controls.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (!el.transferPanel.hidden) {
      el.transferPanel.hidden = true;
      el.transferToggle.setAttribute("aria-expanded", "false");
      el.transferToggle.focus();
    } else if (!el.hangupConfirm.hidden) {
      el.hangupConfirm.hidden = true;
      el.hangup.hidden = false;
      el.hangup.focus();
    }
  });

  el.recentList = h("ol", { class: "recent", testid: "recent" });
  el.recentSummary = h("summary", {}, "Recent interactions");
  el.recent = h("details", { class: "block details", testid: "recent-section" }, el.recentSummary, el.recentList);
  el.timelineList = h("ol", { class: "timeline", testid: "timeline" });
  el.timeline = h("details", { class: "block details" }, h("summary", {}, "This call so far"), el.timelineList);

  el.doneHint = h("p", { class: "done-hint small", testid: "done-hint" });
  el.done = h(
    "button",
    { class: "btn btn-primary", type: "button", testid: "done", onclick: () => onDone(call) },
    "Done",
  );
  el.footer = h("footer", { class: "card-footer", hidden: true }, el.doneHint, el.done);

  el.root = h(
    "article",
    { class: "card", testid: "call-card", "data-call-key": call.key, "aria-labelledby": ids.name },
    h("div", { class: "card-status" }, el.phase, el.hold, el.queueChip, h("span", { class: "spacer" }), el.elapsed),
    h(
      "div",
      { class: "customer" },
      el.name,
      h("div", { class: "badges" }, el.tier, el.status, el.language),
      h("dl", { class: "facts" }, account.row, caller.row, line.row),
      el.loadState,
    ),
    el.transfersList,
    el.controls,
    el.why,
    el.ivr,
    el.notesSection,
    el.wrap,
    el.recent,
    el.timeline,
    el.footer,
  );
  return el;
}

function renderCall(call) {
  const el = call.el;
  const doc = call.doc;
  const phase = call.phase ?? "ringing";
  const over = phase === "ended" || phase === "left";
  el.root.dataset.phase = phase;
  el.root.dataset.tier = doc?.customer?.tier ?? "unknown";

  let phaseText = PHASES[phase] ?? phase;
  if (phase === "left" && call.transferredAway) phaseText = "Transferred";
  setText(el.phase, phaseText);
  el.phase.className = `chip phase phase-${phase}`;
  show(el.hold, call.held && !over);
  setText(el.queueChip, call.queue || doc?.routing?.queue || "");
  renderElapsed(call);

  // Customer
  const customer = doc?.customer ?? null;
  if (doc) {
    setText(el.name, customer?.name || "Unknown caller");
    const tier = customer?.tier ?? doc.routing?.tier ?? "unknown";
    setText(el.tier, capitalize(tier));
    el.tier.className = `badge tier tier-${tier}`;
    show(el.tier, true);
    const status = customer?.status ?? "";
    setText(el.status, capitalize(status));
    el.status.className = `badge status status-${status === "active" ? "ok" : "warn"}`;
    show(el.status, Boolean(status));
    setText(el.language, languageName(customer?.language));
    show(el.language, Boolean(customer?.language));
    setText(el.account, customer?.account_number ?? "");
    show(el.accountRow, Boolean(customer?.account_number));
    setText(el.ani, doc.ani || "withheld");
    setText(el.line, [doc.dnis, doc.service].filter(Boolean).join(" · ") || "—");
  } else {
    setText(el.name, call.loadError ? "Caller" : "Loading caller…");
    for (const badge of [el.tier, el.status, el.language]) show(badge, false);
    show(el.accountRow, false);
    setText(el.ani, "");
    setText(el.line, "");
  }
  setText(el.loadState, call.loadError?.message ?? "");
  show(el.loadState, Boolean(call.loadError));

  // Why here
  const routing = doc?.routing;
  show(el.why, Boolean(routing));
  if (routing) {
    const parts = [`Rule “${routing.rule ?? "default"}”`];
    if (routing.queue) parts.push(`queue ${routing.queue}`);
    if (routing.priority !== undefined && routing.priority !== null) parts.push(`priority ${routing.priority}`);
    setText(el.rule, parts.join(" · "));
    show(el.failOpen, Boolean(routing.fail_open));
    setText(
      el.failOpen,
      routing.fail_open ? `Routed without the customer lookup (${routing.fail_open}): details may be missing.` : "",
    );
  }

  // IVR
  const ivr = Object.entries(doc?.ivr ?? {});
  show(el.ivr, ivr.length > 0);
  if (ivr.length) {
    const signature = JSON.stringify(ivr);
    if (el.ivrList.dataset.sig !== signature) {
      el.ivrList.dataset.sig = signature;
      el.ivrList.replaceChildren(
        ...ivr.map(([key, value]) => h("div", { class: "kv-row" }, h("dt", {}, humanize(key)), h("dd", {}, String(value)))),
      );
    }
  }

  // Earlier agents' notes
  const others = (doc?.notes ?? []).filter((note) => !isMe(note.by) && note.text);
  show(el.notesSection, others.length > 0);
  const notesSig = JSON.stringify(others);
  if (el.notesList.dataset.sig !== notesSig) {
    const old = new Map([...el.notesList.children].map((li) => [li.dataset.by, li.dataset.text]));
    el.notesList.dataset.sig = notesSig;
    el.notesList.replaceChildren(
      ...others.map((note) => {
        const changed = old.size > 0 && old.get(note.by) !== note.text;
        return h(
          "li",
          { class: `note${changed ? " note-fresh" : ""}`, testid: "note", "data-by": note.by, "data-text": note.text },
          h(
            "div",
            { class: "note-head" },
            h("span", { class: "note-by", testid: "note-by" }, note.by),
            h("time", { class: "muted small", datetime: note.at ?? "" }, fmtDateTime(note.at)),
          ),
          h("p", { class: "note-text", testid: "note-text" }, note.text),
        );
      }),
    );
  }

  // Transfers seen on this call
  const transfersSig = JSON.stringify(call.transfers);
  if (el.transfersList.dataset.sig !== transfersSig) {
    el.transfersList.dataset.sig = transfersSig;
    el.transfersList.replaceChildren(
      ...call.transfers.map((t) =>
        h(
          "li",
          {},
          `${t.kind === "attended" ? "Attended" : "Blind"} transfer${t.from ? ` by ${agentName(t.from).replace(/^You$/, "you")}` : ""} to ${t.to ?? "?"} · ${fmtTime(t.at)}`,
        ),
      ),
    );
  }
  show(el.transfersList, call.transfers.length > 0);

  // Editing
  const editable = Boolean(doc);
  el.note.disabled = !editable;
  el.disposition.disabled = !editable;
  // While a conflict is open, the choice is made in the panel; typing here would be lost.
  el.note.readOnly = Boolean(call.conflict);
  el.disposition.readOnly = Boolean(call.conflict);
  show(el.wrap, Boolean(call.callId));
  if (document.activeElement !== el.note && el.note.value !== call.draft.note) el.note.value = call.draft.note;
  if (document.activeElement !== el.disposition && el.disposition.value !== call.draft.disposition) {
    el.disposition.value = call.draft.disposition;
  }
  renderNoteCount(call);
  renderDispositionError(call);
  renderSaveStatus(call);
  renderConflict(call);
  setText(el.notice, call.notice);
  show(el.notice, Boolean(call.notice));

  // Controls: only while this agent is on the call.
  const onCall = phase === "connected";
  show(el.controls, onCall);
  const consulting = call.consulting !== null && call.consulting !== undefined;
  show(el.transferToggle, onCall && !consulting);
  show(el.complete, onCall && consulting);
  show(el.cancel, onCall && consulting);
  show(el.consultInfo, onCall && consulting);
  setText(el.consultInfo, consulting ? `Consulting ${call.consulting || "the target"}; the caller is on hold.` : "");
  if (consulting) {
    el.transferPanel.hidden = true;
    el.transferToggle.setAttribute("aria-expanded", "false");
  }

  // Recent interactions and this call's timeline
  show(el.recent, call.recent.length > 0);
  setText(el.recentSummary, `Recent interactions (${call.recent.length})`);
  const recentSig = JSON.stringify(call.recent);
  if (el.recentList.dataset.sig !== recentSig) {
    el.recentList.dataset.sig = recentSig;
    el.recentList.replaceChildren(
      ...call.recent.map((r) =>
        h(
          "li",
          { testid: "recent-item" },
          h("span", { class: "recent-when" }, fmtDateTime(r.routed_at)),
          h("span", { class: "recent-what" }, [r.queue, r.disposition || "no disposition"].filter(Boolean).join(" · ")),
          h(
            "span",
            { class: "recent-who muted small" },
            [r.rule ? `rule ${r.rule}` : "", (r.agents ?? []).map(extension).join(", ")].filter(Boolean).join(" · "),
          ),
        ),
      ),
    );
  }
  show(el.timeline, call.timeline.length > 0);
  const timelineSig = JSON.stringify(call.timeline);
  if (el.timelineList.dataset.sig !== timelineSig) {
    el.timelineList.dataset.sig = timelineSig;
    el.timelineList.replaceChildren(
      ...call.timeline.map((t) =>
        h("li", {}, h("time", { class: "muted" }, fmtTime(t.at, true)), ` ${humanize(t.kind)}${t.agent ? ` · ${extension(t.agent)}` : ""}`),
      ),
    );
  }

  // Wrap-up
  show(el.footer, over);
  if (over) {
    // Whoever passed the call on is done with it; the disposition is the last agent's.
    const needsDisposition = !call.transferredAway;
    const unsaved = Object.keys(pendingChange(call)).length > 0 || call.saving;
    const ready = !call.conflict && !unsaved && (!needsDisposition || Boolean(doc?.disposition) || !call.callId);
    el.done.disabled = !ready;
    let hint = "";
    if (call.conflict) hint = "Resolve the conflict above first.";
    else if (unsaved) hint = "Saving your changes…";
    else if (!ready) hint = "Save a disposition to finish this call.";
    else if (call.endCause && phase === "ended") hint = `Call over (${call.endCause}).`;
    else hint = "Wrapped up. Done clears this card.";
    setText(el.doneHint, hint);
  }
  updateTitle();
}

function renderElapsed(call) {
  const phase = call.phase ?? "ringing";
  const over = phase === "ended" || phase === "left";
  const end = over ? (call.endedAt ?? Date.now() / 1000) : Date.now() / 1000;
  const text = over ? `at ${fmtTime(call.endedAt)}` : fmtDuration(end - (call.since ?? end));
  setText(call.el.elapsed, text);
}

function renderNoteCount(call) {
  const length = call.draft.note.length;
  setText(call.el.noteCount, length > NOTE_MAX - 500 ? `${length} / ${NOTE_MAX}` : "");
}

function renderDispositionError(call) {
  const value = call.draft.disposition.trim();
  let error = "";
  if (value && !DISPOSITION_RE.test(value)) error = "Use letters, digits, spaces and _ - . / only.";
  setText(call.el.dispositionError, error);
  call.el.disposition.toggleAttribute("aria-invalid", Boolean(error));
}

function renderSaveStatus(call) {
  const el = call.el.saveStatus;
  let text = "";
  let kind = "";
  if (!call.doc) text = "";
  else if (call.conflict) [text, kind] = ["Not saved: resolve the conflict.", "error"];
  else if (call.saving) text = "Saving…";
  else if (call.saveError) [text, kind] = [call.saveError, "error"];
  else if (call.saveTimer || Object.keys(pendingChange(call)).length) text = "Unsaved changes…";
  else if (call.savedAt) text = `All changes saved · ${fmtTime(call.savedAt / 1000)}`;
  setText(el, text);
  el.dataset.kind = kind;
  el.classList.toggle("error", kind === "error");
}

function renderConflict(call) {
  const el = call.el;
  const conflict = call.conflict;
  show(el.conflict, Boolean(conflict));
  if (!conflict) {
    delete el.conflict.dataset.sig;
    return;
  }
  const signature = JSON.stringify(conflict);
  if (el.conflict.dataset.sig === signature) return;
  el.conflict.dataset.sig = signature;
  // Several writers may have saved since we read it; the document names only the last.
  const what = capitalize(conflict.fields.map((f) => (f === "note" ? "your note" : "the disposition")).join(" and "));
  const last = `last saved by ${conflict.by}${conflict.at ? ` at ${fmtTime(conflict.at)}` : ""}`;
  setText(
    el.conflictText,
    `${what} changed since you began (${last}). Nothing of yours or theirs is lost yet: choose what to keep.`,
  );
  const parts = [];
  if (conflict.fields.includes("note")) {
    const mergedId = uid("merged");
    const theirs = conflict.theirs.note;
    const mine = conflict.mine.note;
    parts.push(
      h("p", { class: "conflict-label" }, "Saved now"),
      h("blockquote", { class: "conflict-text", testid: "conflict-theirs" }, theirs || "(empty)"),
      h("p", { class: "conflict-label" }, "Yours, not saved"),
      h("blockquote", { class: "conflict-text", testid: "conflict-mine" }, mine || "(empty)"),
      h("label", { for: mergedId, class: "conflict-label" }, "Merged note (edit before saving)"),
    );
    el.mergeNote.id = mergedId;
    el.mergeNote.value = theirs && mine && !mine.includes(theirs) ? `${theirs}\n${mine}` : mine || theirs;
    parts.push(el.mergeNote);
  }
  if (conflict.fields.includes("disposition")) {
    const name = uid("choice");
    const option = (value, label, testid, checked) =>
      h(
        "label",
        { class: "choice-option" },
        h("input", { type: "radio", name, value, checked, testid }),
        h("span", {}, label, " "),
        h("strong", {}, value || "(none)"),
      );
    el.conflictChoice.replaceChildren(
      h("legend", { class: "conflict-label" }, "Disposition"),
      option(conflict.theirs.disposition, "Saved now:", "conflict-theirs-disposition", false),
      option(conflict.mine.disposition, "Yours:", "conflict-mine-disposition", true),
    );
    parts.push(el.conflictChoice);
  }
  el.conflictBody.replaceChildren(...parts);
}

function onDone(call) {
  if (call.saveTimer || call.saving) {
    call.pendingDone = true;
    saveNow(call);
    return;
  }
  finishDone(call);
}

function finishDone(call) {
  call.pendingDone = false;
  renderCall(call);
  if (call.el.done.disabled) {
    call.el.disposition.focus();
    return;
  }
  rememberDismissed(call.key);
  removeCall(call);
  announce("Call cleared.");
  const next = $("calls").querySelector("textarea, button");
  (next ?? $("pause-toggle")).focus();
}

// ---------------------------------------------------------------------------------
// Supervisor view

const team = {
  timer: null,
  refreshSoon: null,
  agents: [],
  docs: new Map(), // call_key → {doc|null}
  feed: [],
  feedSoon: null,
};

function startTeam() {
  show($("team"), true);
  loadTeamPlan();
  refreshTeam();
  team.timer = setInterval(refreshTeam, TEAM_REFRESH_MS);
}

function stopTeam() {
  clearInterval(team.timer);
  clearTimeout(team.refreshSoon);
  team.timer = null;
  team.agents = [];
  team.feed = [];
  team.docs.clear();
  $("team-rows").replaceChildren();
  $("feed").replaceChildren();
  closeTeamActions(false);
  show($("team"), false);
}

async function refreshTeam() {
  if (!isSupervisor()) return;
  try {
    const data = await api("GET", "/api/supervisor/agents");
    team.agents = Array.isArray(data.agents) ? data.agents : [];
    setText($("team-error"), "");
    setText($("team-updated"), `Updated ${fmtTime(Date.now() / 1000, true)}`);
    for (const agent of team.agents) {
      // A transfer dials an extension of the agent's own PBX: offer that PBX's agents.
      if (pbxOf(agent.endpoint) !== pbxOf(session?.agent?.endpoint)) continue;
      addTargetOption(bareExtension(agent.endpoint), agent.display_name || agent.username);
    }
    renderTeam();
  } catch (err) {
    if (session) setText($("team-error"), `Team not updated: ${err.message}`);
  }
}

function onTeamEvent(ev, ctx) {
  team.feed.push(ev);
  if (team.feed.length > FEED_KEPT) team.feed.splice(0, team.feed.length - FEED_KEPT);
  if (ctx.replay) return;
  clearTimeout(team.refreshSoon);
  team.refreshSoon = setTimeout(refreshTeam, 300);
  clearTimeout(team.feedSoon);
  team.feedSoon = setTimeout(renderFeed, 100);
}

function teamCallName(callKey) {
  if (!callKey) return "";
  const entry = team.docs.get(callKey);
  if (!entry && UUID_RE.test(callKey)) {
    team.docs.set(callKey, { doc: null });
    api("GET", `/api/calls/${encodeURIComponent(callKey)}`)
      .then((data) => {
        team.docs.set(callKey, { doc: data.call });
        renderTeam();
        renderFeed();
      })
      .catch(() => {});
  }
  const doc = entry?.doc;
  if (!doc) return callKey.length > 13 ? `${callKey.slice(0, 8)}…` : callKey;
  return [doc.customer?.name || doc.ani, doc.customer?.tier].filter(Boolean).join(" · ");
}

function renderTeam() {
  const rows = team.agents.map((agent) => {
    const state = String(agent.state ?? "unknown");
    return h(
      "tr",
      { testid: "team-row", "data-endpoint": agent.endpoint, "data-state": state },
      h(
        "td",
        {},
        h("div", { class: "team-name" }, agent.display_name || agent.username),
        h("div", { class: "muted small" }, deviceLabel(agent.endpoint)),
      ),
      h("td", {}, h("span", { class: `chip state state-${state.replace(/[^a-z_]/gi, "")}`, testid: "team-state" }, humanize(state))),
      h("td", { class: "team-call", testid: "team-call" }, teamCallName(agent.call_key)),
      h(
        "td",
        {},
        agent.username === session?.agent?.username
          ? null
          : h("button", {
              class: "btn btn-small",
              type: "button",
              testid: "team-manage",
              "aria-label": `Actions for ${agent.display_name || agent.username}`,
              "aria-controls": "team-actions",
              "aria-expanded": String(teamActions.username === agent.username),
              onclick: () => openTeamActions(agent.username),
              text: "Manage",
            }),
      ),
    );
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No agents.")));
  $("team-rows").replaceChildren(...rows);
  renderTeamActions();
}

// The supervisor's actions on one agent: a panel built once (index.html) and updated
// in place, so the 5-second refresh of the table never loses a choice being made.

const teamActions = { username: null, busy: false };
const SPY_VERBS = { listen: "listen to", whisper: "whisper to", barge: "barge in on" };

async function loadTeamPlan() {
  try {
    const plan = await api("GET", "/api/supervisor/plan");
    const queues = (Array.isArray(plan.queues) ? plan.queues : []).map((q) => [
      q.name,
      q.name,
      q.description || undefined,
    ]);
    fillSelect($("ta-reason"), (plan.pause_reasons ?? []).map(reasonOption));
    fillSelect($("ta-pause-queue"), [["", "all queues"], ...queues]);
    fillSelect($("ta-queue"), queues);
  } catch (err) {
    if (session) setText($("team-error"), `Queues and reasons not loaded: ${err.message}`);
  }
}

function selectedAgent() {
  return team.agents.find((agent) => agent.username === teamActions.username) ?? null;
}

function openTeamActions(username) {
  teamActions.username = username;
  setText($("ta-status"), "");
  show($("team-actions"), true);
  renderTeam();
  const first = $("team-actions").querySelector("button:not(:disabled):not(#ta-close)");
  (first ?? $("ta-close")).focus();
}

function closeTeamActions(returnFocus = true) {
  const was = teamActions.username;
  teamActions.username = null;
  show($("team-actions"), false);
  if (!returnFocus || !was) return;
  renderTeam();
  const row = [...$("team-rows").querySelectorAll("tr")].find((tr) =>
    tr.dataset.endpoint === team.agents.find((a) => a.username === was)?.endpoint,
  );
  row?.querySelector("[data-testid=team-manage]")?.focus();
}

function renderTeamActions() {
  if (!teamActions.username) return;
  const agent = selectedAgent();
  if (!agent) {
    closeTeamActions(false);
    return;
  }
  const name = agent.display_name || agent.username;
  setText($("ta-name"), `${name} · ${humanize(String(agent.state ?? "unknown"))}`);
  const onCall = agent.state === "on_call";
  for (const button of $("team-actions").querySelectorAll("[data-mode]")) {
    button.disabled = teamActions.busy || !onCall;
    button.title = onCall ? `Your phone rings to ${SPY_VERBS[button.dataset.mode]} ${name}` : `${name} is on no call`;
  }
  for (const id of ["ta-pause", "ta-unpause", "ta-login", "ta-logout"]) {
    $(id).disabled = teamActions.busy;
  }
}

async function supervise(action, body, done) {
  const agent = selectedAgent();
  if (!agent || teamActions.busy) return;
  teamActions.busy = true;
  renderTeamActions();
  setText($("ta-status"), "Sending…");
  try {
    const path = `/api/supervisor/agents/${encodeURIComponent(agent.username)}/${action}`;
    await api("POST", path, body);
    const text = done(agent.display_name || agent.username);
    setText($("ta-status"), text);
    announce(text);
  } catch (err) {
    setText($("ta-status"), err.message);
    announce(err.message);
  } finally {
    teamActions.busy = false;
    renderTeamActions();
  }
}

function onSpy(mode) {
  supervise("spy", { mode }, (name) => `Your phone is ringing: answer it to ${SPY_VERBS[mode]} ${name}.`);
}

function onSupervisorPause(paused) {
  const queue = $("ta-pause-queue").value || null;
  const where = queue ? ` in ${queue}` : "";
  if (!paused) {
    supervise("pause", queue ? { paused, queue } : { paused }, (name) => `${name} unpaused${where}.`);
    return;
  }
  const reason = $("ta-reason").value;
  if (!reason) {
    setText($("ta-status"), "Choose a reason first.");
    return;
  }
  const body = queue ? { paused, reason, queue } : { paused, reason };
  supervise("pause", body, (name) => `${name} paused (${humanize(reason)})${where}.`);
}

function onSupervisorQueue(loggedIn) {
  const queue = $("ta-queue").value;
  if (!queue) {
    setText($("ta-status"), "Choose a queue first.");
    return;
  }
  supervise("queue", { queue, logged_in: loggedIn }, (name) =>
    loggedIn ? `${name} logged in to ${queue}.` : `${name} logged out of ${queue}.`,
  );
}

function bindTeamActions() {
  for (const button of $("team-actions").querySelectorAll("[data-mode]")) {
    button.addEventListener("click", () => onSpy(button.dataset.mode));
  }
  $("ta-pause").addEventListener("click", () => onSupervisorPause(true));
  $("ta-unpause").addEventListener("click", () => onSupervisorPause(false));
  $("ta-login").addEventListener("click", () => onSupervisorQueue(true));
  $("ta-logout").addEventListener("click", () => onSupervisorQueue(false));
  $("ta-close").addEventListener("click", () => closeTeamActions());
  $("team-actions").addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeTeamActions();
  });
}

function renderFeed() {
  const items = team.feed
    .slice()
    .reverse()
    .slice(0, 15)
    .map((ev) =>
      h(
        "li",
        { testid: "feed-item", "data-event": ev.event },
        h("time", { class: "muted" }, fmtTime(ev.at, true)),
        " ",
        describeEvent(ev),
      ),
    );
  $("feed").replaceChildren(...items);
}

// ---------------------------------------------------------------------------------
// Start

function tick() {
  for (const call of calls.values()) renderElapsed(call);
  renderWrapup();
}

function unsavedCalls() {
  return [...calls.values()].filter(
    (call) => call.doc && !call.conflict && (call.saving || Object.keys(pendingChange(call)).length),
  );
}

/** Closing or reloading the tab: send what is typed but not saved yet. keepalive lets the
 * request outlive the page; its answer is not needed (a conflict shows on the next load). */
function flushOnExit() {
  if (!session) return;
  for (const call of unsavedCalls()) {
    if (call.saving) continue;
    const change = pendingChange(call);
    clearTimeout(call.saveTimer);
    fetch(`/api/calls/${encodeURIComponent(call.callId)}`, {
      method: "PATCH",
      keepalive: true,
      headers: { Authorization: `Bearer ${session.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ version: call.doc.version, change }),
    }).catch(() => {});
  }
}

function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("sign-out").addEventListener("click", () => signOut("You have signed out."));
  $("reconnect-now").addEventListener("click", () => {
    conn.attempt = 0;
    dropSocket();
    connect();
  });
  $("missed-dismiss").addEventListener("click", () => {
    missed.items = [];
    renderMissed();
    $("calls").querySelector("button, textarea")?.focus();
  });
  $("pause-toggle").addEventListener("click", onPauseToggle);
  bindTeamActions();
  $("pause-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setPaused(true, $("pause-reason").value);
  });
  $("pause-cancel").addEventListener("click", () => {
    closePauseForm();
    $("pause-toggle").focus();
  });
  $("pause-form").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      closePauseForm();
      $("pause-toggle").focus();
    }
  });
  window.addEventListener("pagehide", flushOnExit);
  window.addEventListener("beforeunload", (event) => {
    if (unsavedCalls().some((call) => call.saving || call.saveError)) event.preventDefault();
  });
  window.addEventListener("offline", onOffline);
  window.addEventListener("online", onOnline);
  setInterval(tick, 1000);
  seedTargets();

  session = readSession();
  if (session) startApp();
  else showLogin();
}

boot();
