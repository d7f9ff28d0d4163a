// The incident page: an alert's timeline and its recording, from /api/evidence (web/incident.py).
// Every fetch here is audited by the relay: the view, each play or seek, the download.

const $ = (id) => document.getElementById(id);
const when = (us) => (us ? new Date(us / 1000).toLocaleString() : "");

function fail(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

async function load(url) {
  const answer = await fetch(url, { credentials: "same-origin" });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error || `${answer.status} ${answer.statusText}`);
  return body;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

async function showList() {
  $("list-panel").hidden = false;
  const { recordings } = await load("/api/evidence");
  $("no-recordings").hidden = recordings.length > 0;
  const body = $("recordings").querySelector("tbody");
  for (const item of recordings) {
    const row = document.createElement("tr");
    const link = document.createElement("a");
    link.href = `/incident?alert=${encodeURIComponent(item.alert_id)}`;
    link.textContent = item.alert_id;
    cell(row, "").append(link);
    cell(row, item.button);
    cell(row, item.site);
    cell(row, when(item.started_at));
    cell(row, `${item.seconds.toFixed(1)} s`);
    cell(row, item.state);
    body.append(row);
  }
}

async function showIncident(alertId) {
  const detail = await load(`/api/evidence/${encodeURIComponent(alertId)}`);
  const { alert, recording, integrity } = detail;
  $("incident-panel").hidden = false;
  $("incident-title").textContent = `Alert ${alert.alert_id}`;
  $("incident-summary").textContent =
    `${alert.kind} from button ${alert.button} (${alert.site}), pressed ${when(alert.pressed_at)}; now ${alert.state}. ` +
    `Recording ${recording.state}, ${recording.seconds.toFixed(1)} s in ${recording.segments} segments.`;
  const state = $("integrity");
  state.className = `integrity ${integrity.ok ? "ok" : "bad"}`;
  state.textContent = integrity.ok
    ? `Integrity verified: every segment matches the signed manifest${integrity.gaps.length ? `; ${integrity.gaps.join("; ")}` : ""}.`
    : `INTEGRITY FAILED: ${integrity.problems.join("; ")}`;
  if (recording.press_offset_seconds !== null) {
    $("press-note").textContent =
      `The recording starts ${recording.press_offset_seconds.toFixed(1)} s before the press (pre-roll): the press is at ${recording.press_offset_seconds.toFixed(1)} s.`;
  }
  const video = $("recording");
  video.src = `/api/evidence/${encodeURIComponent(alertId)}/video`;
  if (detail.may_download) {
    const link = $("download");
    link.href = `/api/evidence/${encodeURIComponent(alertId)}/download`;
    link.hidden = false;
  }
  for (const step of detail.timeline) {
    const item = document.createElement("li");
    const who = step.operator ? ` by ${step.operator}` : "";
    const unit = step.unit ? `, unit ${step.unit}` : "";
    const note = step.note ? ` (${step.note})` : "";
    item.textContent = `${when(step.at)}: ${step.kind === "escalated" ? `escalated to level ${step.level}` : step.state}${who}${unit}${note}`;
    $("timeline").append(item);
  }
  for (const part of recording.parts) {
    const item = document.createElement("li");
    item.textContent = `part ${part.part}: ${part.reason}, from ${when(part.started_at)}`;
    $("parts").append(item);
  }
  for (const gap of recording.gaps) {
    const item = document.createElement("li");
    item.className = "gap";
    item.textContent = `gap of ${((gap.to_us - gap.from_us) / 1e6).toFixed(1)} s at ${(gap.from_us / 1e6).toFixed(1)} s: ${gap.reason}`;
    $("parts").append(item);
  }
}

const alertId = new URLSearchParams(location.search).get("alert");
(alertId ? showIncident(alertId) : showList()).catch((error) => fail(error.message));
