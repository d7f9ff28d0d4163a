// The board's order and the reason for each alert's place in it.
//
// A hurried operator reaches for the top of the list first, so the top must be
// the alert that needs a person most: one nobody has taken yet, the one the
// relay has escalated furthest, and of those the one waiting longest. Newest
// first (what the board did before) sinks the oldest, most escalated alert to
// the bottom. This module only ranks and words; board.js moves the cards.

const TAKEN = new Set(["acknowledged", "dispatched", "on_scene"]);

// 0 unanswered, 1 taken by someone, 2 closed (lingering a few seconds on the board).
function group(alert) {
  if (alert.state === "raised") return 0;
  return TAKEN.has(alert.state) ? 1 : 2;
}

export function receivedAt(alert) {
  return alert.received_at || alert.pressed_at;
}

// Negative when alert a belongs above alert b: unanswered before taken, then
// higher escalation level first, then older first; the id breaks exact ties so
// the order never flickers.
export function compareUrgency(a, b) {
  return group(a) - group(b)
    || (b.level || 0) - (a.level || 0)
    || receivedAt(a) - receivedAt(b)
    || (a.alert_id < b.alert_id ? -1 : a.alert_id > b.alert_id ? 1 : 0);
}

// "0:07", "3:05", "1:02:09": an age that visibly ticks every second.
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

// The badge that says why an alert sits where it does, e.g. "LEVEL 2 · 3:05 unanswered".
export function urgencyReason(alert, nowMs) {
  const age = duration(nowMs / 1000 - receivedAt(alert) / 1e6);
  const level = alert.level ? `LEVEL ${alert.level}` : "";
  switch (group(alert)) {
    case 0:
      return { text: `${level || "NEW"} · ${age} unanswered`, tone: alert.level ? "escalated" : "new" };
    case 1:
      return { text: `${level ? `${level} · ` : ""}taken · ${age} open`, tone: "taken" };
    default:
      return { text: "closed", tone: "closed" };
  }
}
