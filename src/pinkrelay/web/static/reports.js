// The reports page: per site, room, operator and shift, the time from a press
// to acknowledged, dispatched and resolved (p50, p90 and a histogram drawn on a
// canvas), escalations, outcomes, and the devices with the most offline time.
// The relay computes the figures (GET /api/reports, alerts/reports.py); this
// page only lays them out and draws.

const $ = (id) => document.getElementById(id);
const STAGES = ["acknowledged", "dispatched", "resolved"];
const GROUPINGS = [["overall", "All alerts"], ["site", "By site"], ["room", "By room"],
  ["operator", "By operator"], ["shift", "By shift"]];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)}:${String(Math.floor(seconds % 60)).padStart(2, "0")}`;
}

// One histogram: a bar per bin, its count above it, the bin's lower edge below.
function drawHistogram(canvas, bins) {
  const ratio = window.devicePixelRatio || 1;
  const width = 240, height = 70;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const top = Math.max(1, ...bins.map((b) => b.count));
  const bar = width / bins.length;
  ctx.font = "9px sans-serif";
  ctx.textAlign = "center";
  bins.forEach((bin, index) => {
    const h = (bin.count / top) * (height - 26);
    const x = index * bar;
    ctx.fillStyle = "#ff2d87";
    ctx.fillRect(x + 1, height - 12 - h, bar - 2, h);
    ctx.fillStyle = "#8b98a8";
    ctx.fillText(String(bin.from), x + bar / 2, height - 2);
    if (bin.count) {
      ctx.fillStyle = "#e6edf3";
      ctx.fillText(String(bin.count), x + bar / 2, height - 14 - h);
    }
  });
  canvas.dataset.counts = bins.map((b) => b.count).join(",");
  canvas.title = bins.map((b) => `${b.from}${b.to === null ? "+" : `–${b.to}`} s: ${b.count}`).join("\n");
}

function table(grouping, groups) {
  const node = el("table", "report-table");
  node.dataset.grouping = grouping;
  const head = el("tr");
  head.append(el("th", "", grouping === "overall" ? "" : grouping), el("th", "", "alerts"),
    ...STAGES.map((s) => el("th", "", `press → ${s}: p50 / p90 (n)`)),
    el("th", "", "escalated (steps)"), el("th", "", "genuine"), el("th", "", "false"),
    el("th", "", "test"), el("th", "", "open"));
  node.append(head);
  for (const group of groups) {
    const row = el("tr");
    row.dataset.group = group.name;
    row.append(el("td", "name", group.name), el("td", "n-alerts", String(group.alerts)));
    for (const stage of STAGES) {
      const data = group[stage];
      const cell = el("td", `stage ${stage}`);
      cell.append(el("div", "figures", `${duration(data.p50_s)} / ${duration(data.p90_s)} (${data.count})`));
      const canvas = el("canvas", "histogram");
      canvas.setAttribute("aria-label", `${group.name}: press to ${stage}, histogram`);
      cell.append(canvas);
      drawHistogram(canvas, data.histogram);
      row.append(cell);
    }
    const outcomes = group.outcomes;
    row.append(el("td", "escalations", `${group.escalated_alerts} (${group.escalations})`),
      el("td", "genuine", String(outcomes.genuine)), el("td", "false", String(outcomes.false)),
      el("td", "test", String(outcomes.test)), el("td", "open", String(outcomes.open)));
    node.append(row);
  }
  return node;
}

function offlineTable(devices) {
  const node = el("table", "report-table");
  node.dataset.grouping = "offline";
  const head = el("tr");
  head.append(el("th", "", "button"), el("th", "", "site"), el("th", "", "offline"), el("th", "", "periods"));
  node.append(head);
  for (const device of devices) {
    const row = el("tr");
    row.dataset.group = device.button;
    row.append(el("td", "name", device.button), el("td", "", device.site),
      el("td", "offline", duration(device.offline_s)), el("td", "", String(device.periods)));
    node.append(row);
  }
  return node;
}

export function render(report) {
  const parts = [];
  for (const [grouping, title] of GROUPINGS) {
    const groups = grouping === "overall" ? [report.overall] : report.groups[grouping];
    parts.push(el("h2", "", title), table(grouping, groups));
  }
  parts.push(el("h2", "", "Devices with the most offline time"), offlineTable(report.offline));
  $("report").replaceChildren(...parts);
  $("report-summary").textContent = `${report.overall.alerts} alerts` + (report.room ? ` of room ${report.room}` : "")
    + `; ${report.test_presses} test presses left out. Percentiles by nearest rank; shifts start at `
    + `${report.shifts.map((h) => `${String(h).padStart(2, "0")}:00`).join(", ")} (the relay's time).`;
}

function localInput(date) {
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}

async function show() {
  const error = $("report-error");
  error.hidden = true;
  const params = new URLSearchParams({
    from: new Date($("from").value).toISOString(),
    to: new Date($("to").value).toISOString(),
  });
  if ($("room").value.trim()) params.set("room", $("room").value.trim());
  const response = await fetch(`/api/reports?${params}`).catch(() => null);
  if (response && response.status === 401) {
    location.assign("/signin");
    return;
  }
  const body = response ? await response.json().catch(() => ({})) : {};
  if (!response || !response.ok) {
    error.textContent = body.error || "The relay did not answer; try again.";
    error.hidden = false;
    return;
  }
  render(body);
  document.body.dataset.loaded = "yes";
}

const now = new Date();
const params = new URLSearchParams(location.search);
$("to").value = params.get("to") || localInput(now);
$("from").value = params.get("from") || localInput(new Date(now.getTime() - 7 * 24 * 3600 * 1000));
if (params.get("room")) $("room").value = params.get("room");
$("report-form").addEventListener("submit", (event) => {
  event.preventDefault();
  show();
});
show();
