/* The reports page: GET /api/reports/{kind} drawn as SVG line charts (service level and
 * speed of answer per interval by queue; service level by tier on one chart, so value
 * routing shows), the queue table beneath and a CSV download. Drawn by hand rather than
 * with a charting library: three line charts are about a hundred lines, no vendored
 * code and nothing to build. Uses the sidebar's session (same tab, sessionStorage). */

const SESSION_KEY = "cti.session";
const W = 640, H = 220, PAD = { left: 40, right: 10, top: 10, bottom: 30 };
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function readSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (stored?.token && Date.parse(stored.expires_at) > Date.now()) return stored;
  } catch {
    // unreadable
  }
  return null;
}

const session = readSession();

function query() {
  const params = new URLSearchParams({
    from: $("r-from").value,
    to: $("r-to").value,
    interval: $("r-interval").value,
  });
  return params.toString();
}

async function get(kind, format = "json") {
  const response = await fetch(`/api/reports/${kind}?${query()}&format=${format}`, {
    headers: { Authorization: `Bearer ${session.token}` },
    cache: "no-store",
  });
  if (!response.ok) {
    let message = `The server answered ${response.status}.`;
    try {
      message = (await response.json()).message || message;
    } catch {
      // not JSON
    }
    throw new Error(message);
  }
  return format === "csv" ? response.blob() : response.json();
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One line per group: ``rows`` by interval, ``value(row)`` (null: no point). */
function drawChart(svg, rows, group, value, maxHint) {
  svg.replaceChildren();
  const starts = [...new Set(rows.map((r) => r.interval_start))];
  const groups = [...new Set(rows.map((r) => r[group]))];
  const values = rows.map(value).filter((v) => v !== null && v !== undefined);
  const max = Math.max(maxHint || 0, ...values, 1);
  const x = (i) => PAD.left + (starts.length <= 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (starts.length - 1));
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom }));
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom }));
  svg.append(el("text", { class: "label", x: 2, y: PAD.top + 8 }, String(Math.round(max))));
  svg.append(el("text", { class: "label", x: 2, y: H - PAD.bottom }, "0"));
  if (starts.length) {
    svg.append(el("text", { class: "label", x: PAD.left, y: H - 8 }, starts[0].slice(0, 16)));
    svg.append(el("text", { class: "label", x: W - PAD.right, y: H - 8, "text-anchor": "end" }, starts.at(-1).slice(0, 16)));
  }
  groups.forEach((name, g) => {
    const colour = COLOURS[g % COLOURS.length];
    const points = [];
    starts.forEach((start, i) => {
      const row = rows.find((r) => r.interval_start === start && r[group] === name);
      const v = row ? value(row) : null;
      if (v !== null && v !== undefined) points.push([x(i), y(v), start, v]);
    });
    const series = el("g", { "data-series": name, "data-testid": `series-${name}` });
    if (points.length > 1) {
      series.append(el("polyline", { class: "series", stroke: colour, points: points.map((p) => `${p[0]},${p[1]}`).join(" ") }));
    }
    for (const [px, py, start, v] of points) {
      const dot = el("circle", { cx: px, cy: py, r: 2.5, fill: colour, "data-point": "" });
      dot.append(el("title", {}, `${name} ${start}: ${v}`));
      series.append(dot);
    }
    series.append(el("text", { class: "label", x: W - PAD.right - 4, y: PAD.top + 10 + g * 11, fill: colour, "text-anchor": "end" }, name));
    svg.append(series);
  });
}

function drawTable(rows) {
  const table = $("reports-table");
  table.replaceChildren();
  if (!rows.length) return;
  const columns = Object.keys(rows[0]);
  const head = table.createTHead().insertRow();
  for (const column of columns) {
    const th = document.createElement("th");
    th.textContent = column;
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const column of columns) tr.insertCell().textContent = row[column] ?? "";
  }
}

async function show() {
  $("reports-error").textContent = "";
  const sl = $("r-sl").value;
  try {
    const [queues, tiers] = await Promise.all([get("queues"), get("tiers")]);
    $("reports-formula").textContent = queues.definitions?.[sl] || "";
    drawChart($("chart-sl"), queues.rows, "queue", (r) => r[sl], 100);
    drawChart($("chart-asa"), queues.rows, "queue", (r) => (r.answered ? r.asa_s : null));
    drawChart($("chart-tier"), tiers.rows, "tier", (r) => r[sl], 100);
    drawTable(queues.rows);
  } catch (err) {
    $("reports-error").textContent = `Report not shown: ${err.message}`;
  }
}

async function downloadCsv() {
  try {
    const blob = await get("queues", "csv");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `cti-queues-${$("r-from").value}-${$("r-to").value}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (err) {
    $("reports-error").textContent = `CSV not downloaded: ${err.message}`;
  }
}

if (!session || session.agent?.role !== "supervisor") {
  $("reports-signin").hidden = false;
} else {
  const today = new Date().toISOString().slice(0, 10);
  $("r-from").value = today;
  $("r-to").value = today;
  $("reports-form").hidden = false;
  $("reports-form").addEventListener("submit", (event) => {
    event.preventDefault();
    show();
  });
  $("r-csv").addEventListener("click", downloadCsv);
  show();
}
