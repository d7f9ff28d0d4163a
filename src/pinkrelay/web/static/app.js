// The control room page: one WebSocket for board events (JSON) and live media
// (binary), REST calls for operator actions, and the three panels.
import { Board, clockTime } from "./board.js";
import { SiteMap } from "./map.js";
import { AUTO_OPEN_TILES, LiveWall } from "./live.js";
import { alarmPeak, plays, unlock, soundOn } from "./sound.js";
import { Alarm, MUTE_SECONDS } from "./alarm.js";
import { BoardKeys } from "./keys.js";
import { OffscreenAlerts } from "./offscreen.js";
import { duration } from "./urgency.js";
import { SinkStatus } from "./sinks.js";
import { Maintenance } from "./maintenance.js";
import { TalkBack } from "./talk.js";

const $ = (id) => document.getElementById(id);
const AUTO_OPEN_KINDS = new Set(["panic", "tamper"]);

const room = {
  operator: "",
  role: "",
  csrf: "",
  sites: new Map(),
  buttonStates: new Map(),
  socket: null,
  retry: 500,
  loaded: false,
};
window.pinkrelay = room; // for people (and tests) poking at the page

function send(message) {
  if (room.socket && room.socket.readyState === WebSocket.OPEN) room.socket.send(JSON.stringify(message));
}

function sendBinary(data) {
  if (room.socket && room.socket.readyState === WebSocket.OPEN) room.socket.send(data);
}

function siteOf(button) {
  const entry = room.sites.get(button);
  return entry ? entry.site : null;
}

function stateOf(button) {
  if (board.openButtons().has(button)) return "alerting";
  return room.buttonStates.get(button) || "offline";
}

async function act(alertId, state, unit, note, outcome = {}) {
  let response;
  try {
    response = await fetch(`/api/alerts/${encodeURIComponent(alertId)}/actions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": room.csrf },
      body: JSON.stringify({ state, unit, note, ...outcome }),
    });
  } catch (error) {
    return { ok: false, error: "The relay did not answer; the action was not recorded. Try again." };
  }
  if (response.status === 401) {
    location.assign("/signin");
    return { ok: false, error: "Signed out" };
  }
  const body = await response.json().catch(() => ({}));
  return response.ok ? { ok: true } : { ok: false, error: body.error || `refused (${response.status})` };
}

// A supervisor's record action on a live stream (web/incident.py); the tile's button shows the outcome.
async function recordStream(button) {
  try {
    const response = await fetch("/api/evidence/record", {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": room.csrf },
      body: JSON.stringify({ button }),
    });
    const body = await response.json().catch(() => ({}));
    return response.ok ? "Recording" : (body.error || `refused (${response.status})`).slice(0, 60);
  } catch (error) {
    return "No answer: not recording";
  }
}

async function savePlan(key, plan) {
  let response;
  try {
    response = await fetch("/api/plans", {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": room.csrf },
      body: JSON.stringify({ key, plan }),
    });
  } catch (error) {
    return { ok: false, error: "The relay did not answer; the plan was not saved. Try again." };
  }
  const body = await response.json().catch(() => ({}));
  return response.ok ? { ok: true } : { ok: false, error: body.error || `refused (${response.status})` };
}

const talk = new TalkBack(send, sendBinary);
room.talk = talk;
const board = new Board($("alerts"), $("no-alerts"), $("alert-count"), {
  act,
  savePlan,
  talk,
  watch: (button) => live.open(button),
  siteOf,
});
const maintenance = new Maintenance($("maintenance"), $("n-test"), { csrf: () => room.csrf });
room.maintenance = maintenance;
const live = new LiveWall($("streams"), $("no-streams"), send, siteOf);
const alarm = new Alarm(() => board.highestUnanswered());
new BoardKeys(board).attach(document);
new OffscreenAlerts($("alerts"), $("more-unanswered"));
// The page's audio hooks: every alarm burst asked for (heard or not), the alarm's
// loudness right now, and the alarm itself (mute state).
room.audio = { plays, peak: alarmPeak, alarm, muteSeconds: MUTE_SECONDS };
room.tileLimit = AUTO_OPEN_TILES;

function openAlertVideo(alert) {
  if (AUTO_OPEN_KINDS.has(alert.kind)) live.autoOpen(alert.button);
}
const map = new SiteMap($("map"), {
  onSelect: (button) => { unlock(); live.open(button); },
  stateOf,
  modeOf: (button) => (maintenance.modes.has(button) ? "test" : "live"),
  counts: (counts, total) => {
    $("n-alerting").textContent = counts.alerting || 0;
    $("n-online").textContent = counts.online || 0;
    $("n-offline").textContent = counts.offline || 0;
    $("site-count").textContent = total;
  },
});
live.onChange = () => { map.watching = live.watching(); map.refresh(); };
board.onChange = () => { alarm.update(); map.refresh(); updateTitle(); };

function updateTitle() {
  const waiting = board.unacknowledged();
  document.title = waiting ? `(${waiting}) ALERT · pinkrelay control room` : "pinkrelay control room";
}

function changed() {
  alarm.update();
  map.refresh();
  for (const button of live.watching()) live.setAlerting(button, board.openButtons().has(button));
  updateTitle();
}

function onMessage(message) {
  switch (message.type) {
    case "snapshot":
      room.operator = message.operator;
      room.role = message.role;
      room.csrf = message.csrf;
      board.role = message.role;
      live.record = message.role === "supervisor" ? recordStream : null;
      $("operator").textContent = message.operator;
      $("role").textContent = message.role;
      room.sites = new Map(message.sites.map((s) => [s.button, s]));
      room.buttonStates = new Map(message.sites.map((s) => [s.button, s.state]));
      // After a reconnect: alerts raised while the link was down still beep and flash.
      const missed = room.loaded
        ? message.alerts.filter((a) => a.state === "raised" && !board.has(a.alert_id))
        : [];
      const signingIn = !room.loaded;
      board.load(message.alerts);
      room.loaded = true;
      for (const alert of missed) board.upsert(alert, { fresh: true });
      // At sign-in the open alerts open their video like new ones, most urgent first.
      const opening = signingIn ? board.ordered().map((item) => item.alert) : missed;
      for (const alert of opening) openAlertVideo(alert);
      if (signingIn || missed.length) alarm.ring(signingIn ? "open at sign-in" : "missed");
      maintenance.load(message.sites, message.role); // before the map, which marks buttons in test mode
      map.draw(message.sites);
      live.resubscribe();
      changed();
      break;
    case "alert": {
      const alert = message.alert;
      if (alert.state === "duplicate") {
        if (board.repeat(alert)) alarm.once("pressed again");
        break;
      }
      const isNew = !board.has(alert.alert_id);
      board.upsert(alert, { fresh: isNew && alert.state === "raised" });
      if (isNew && alert.state === "raised") {
        if (alert.level) alarm.escalated(); // brought to this room by its escalation: ends a mute too
        else alarm.ring("new");
        openAlertVideo(alert);
      }
      changed();
      break;
    }
    case "update": {
      const result = board.applyUpdate(message.update);
      if (result && result[1] && message.update.state === "raised") alarm.escalated(); // louder, faster
      changed();
      break;
    }
    case "button-mode":
      maintenance.changed(message);
      map.refresh();
      break;
    case "plan":
      board.setPlan(message.buttons, message.plan);
      break;
    case "false-alarms":
      board.setFalseAlarms(message.site, message.false_alarms_12m);
      break;
    case "button":
      room.buttonStates.set(message.button, message.state);
      changed();
      break;
    case "stream":
      live.onStream(message);
      break;
    case "stream-interrupted":
      live.onInterrupted(message);
      break;
    case "resync":
      // The server missed events: reconnect for a fresh snapshot.
      if (room.socket) room.socket.close();
      break;
    case "talk":
      talk.onMessage(message);
      break;
    case "evidence-stopped":
      showEvidenceStopped(message);
      break;
    case "error":
      console.warn("control room:", message.message);
      break;
    default:
      break;
  }
}

// A recording the relay had to stop (queue or disk full): loud, until someone closes it. Live video goes on.
function showEvidenceStopped(message) {
  const banner = document.createElement("div");
  banner.className = "evidence-stopped";
  banner.setAttribute("role", "alert");
  banner.textContent = message.message;
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Close";
  close.addEventListener("click", () => banner.remove());
  banner.append(close);
  document.body.prepend(banner);
}

function setLink(state, text) {
  const link = $("link");
  link.className = `link ${state}`;
  link.textContent = text;
}

async function signedIn() {
  try {
    const response = await fetch("/api/session");
    return response.status !== 401;
  } catch (error) {
    return true; // the relay is unreachable, not a sign-out: keep retrying
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  room.socket = socket;
  socket.onopen = () => {
    room.retry = 500;
    setLink("up", "live");
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onMessage(JSON.parse(event.data));
    else live.onPacket(event.data);
  };
  socket.onclose = async (event) => {
    room.socket = null;
    talk.abandon("the link to the relay was lost"); // the relay ended the talk with the socket
    if (event.code === 4401 || !(await signedIn())) {
      location.assign("/signin");
      return;
    }
    setLink("down", "relay unreachable: retrying");
    setTimeout(connect, room.retry);
    room.retry = Math.min(room.retry * 2, 5000);
  };
}

let soundWasOn = false;
function showSound() {
  const button = $("sound");
  const on = soundOn();
  button.className = `sound ${on ? "on" : "off"}`;
  button.textContent = on ? "Sound on" : "Sound off";
  button.title = on ? "Alarm and live audio are on" : "Browsers start silent until the page is clicked: click to enable";
  $("sound-banner").hidden = on;
  if (on && !soundWasOn) alarm.ring("sound on"); // unanswered alerts are heard the moment sound is on
  soundWasOn = on;
}

function showMute() {
  const button = $("mute");
  const muted = alarm.muted();
  button.classList.toggle("muted", muted);
  button.textContent = muted ? `Alarm muted ${duration(alarm.muteLeft())}: unmute` : `Mute alarm ${MUTE_SECONDS / 60} min`;
  button.title = muted
    ? "This workstation's alarm is silent until the time runs out or an alert escalates"
    : `Silence this workstation's alarm for at most ${MUTE_SECONDS / 60} minutes; an escalation ends the mute`;
}
alarm.onChange = showMute;

$("sound").addEventListener("click", () => unlock());
$("sound-banner").addEventListener("click", () => unlock());
$("mute").addEventListener("click", () => (alarm.muted() ? alarm.unmute() : alarm.mute()));
document.addEventListener("pointerdown", () => unlock(), { capture: true });
document.addEventListener("keydown", () => unlock(), { capture: true });
document.addEventListener("soundstate", showSound);
$("signout").addEventListener("click", async () => {
  await fetch("/signout", { method: "POST", headers: { "x-csrf-token": room.csrf } }).catch(() => {});
  location.assign("/signin");
});
setInterval(() => {
  $("clock").textContent = clockTime(Date.now() * 1000);
  if (alarm.muted()) showMute();
}, 1000);
showMute();
$("clock").textContent = clockTime(Date.now() * 1000);
unlock().then(showSound);
connect();
new SinkStatus($("sinks")).start();
