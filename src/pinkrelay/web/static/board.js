// The alert board: open alerts in urgency order (urgency.js), each with a badge
// saying why it is where it is, its age ticking, and the actions the lifecycle
// allows from its state. The server decides; the buttons shown here only save a
// round trip to learn what it would refuse.
//
// Built for stress: the newest unanswered alert is the one thing on the board
// that moves; an unanswered alert flashes when it escalates; a card can be
// selected (click, or the arrow keys of keys.js) for the keyboard shortcuts.
import { compareUrgency, receivedAt, urgencyReason } from "./urgency.js";
import { PlanView, falseAlarmText } from "./plan.js";

const NEXT = {
  raised: ["acknowledged", "false_alarm"],
  acknowledged: ["dispatched", "resolved", "false_alarm"],
  dispatched: ["on_scene", "resolved", "false_alarm"],
  on_scene: ["resolved", "false_alarm"],
};
const OPEN = new Set(Object.keys(NEXT));
const ACTION_LABEL = {
  acknowledged: "Acknowledge",
  dispatched: "Dispatch…",
  on_scene: "On scene",
  resolved: "Resolve",
  false_alarm: "False alarm",
};

// Outcomes a closing step may record (alerts/lifecycle.py); "false:<category>" carries the category.
const FALSE_OUTCOMES = [
  ["false:malicious", "False: malicious"],
  ["false:accidental", "False: accidental"],
  ["false:device_fault", "False: device fault"],
];
const OUTCOME_CHOICES = {
  resolved: [["genuine", "Genuine"], ...FALSE_OUTCOMES, ["test", "Test"]],
  false_alarm: [...FALSE_OUTCOMES, ["test", "Test"]],
};
const STATE_LABEL = {
  raised: "raised",
  acknowledged: "acknowledged",
  dispatched: "dispatched",
  on_scene: "on scene",
  resolved: "resolved",
  false_alarm: "false alarm",
};
const CLOSED_LINGER_MS = 8000;

// The latest count and list of a mass outage: the relay's newest note, else what the board loaded.
function outageLine(item) {
  for (let i = item.history.length - 1; i >= 0; i -= 1) {
    const u = item.history[i];
    if (u.operator === "relay" && u.note && !u.level && u.note.startsWith("mass outage")) return u.note;
  }
  return item.alert.outage || "Many buttons of this district went silent together; the list follows.";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function clockTime(us) {
  return new Date(us / 1000).toLocaleTimeString("en-GB", { hour12: false });
}

export class Board {
  constructor(list, empty, count, { act, watch, siteOf, savePlan, talk = null }) {
    this.list = list;
    this.talk = talk;
    this.savePlan = savePlan;
    this.empty = empty;
    this.count = count;
    this.act = act;
    this.watch = watch;
    this.siteOf = siteOf;
    this.role = "operator";
    this.items = new Map();
    this.selected = null;
    this.loading = false;
    setInterval(() => this.tick(), 1000);
  }

  openButtons() {
    const buttons = new Set();
    for (const item of this.items.values()) if (OPEN.has(item.alert.state)) buttons.add(item.alert.button);
    return buttons;
  }

  unacknowledged() {
    let n = 0;
    for (const item of this.items.values()) if (item.alert.state === "raised") n += 1;
    return n;
  }

  // The highest escalation level among unanswered alerts; -1 when every alert has been taken.
  highestUnanswered() {
    let level = -1;
    for (const item of this.items.values()) {
      if (item.alert.state === "raised") level = Math.max(level, item.alert.level || 0);
    }
    return level;
  }

  // The items in board order, most urgent first.
  ordered() {
    return [...this.items.values()].sort((a, b) => compareUrgency(a.alert, b.alert));
  }

  has(alertId) {
    return this.items.has(alertId);
  }

  load(alerts) {
    for (const item of this.items.values()) item.node.remove();
    this.items.clear();
    this.loading = true; // arrange once at the end, not once per alert
    try {
      for (const alert of alerts) this.upsert(alert, { fresh: false });
    } finally {
      this.loading = false;
    }
    this.arrange();
  }

  upsert(alert, { fresh }) {
    let item = this.items.get(alert.alert_id);
    if (!item) {
      item = { alert, history: [], repeats: 0, node: null, shownState: null };
      this.items.set(alert.alert_id, item);
      item.node = this.build(item);
    } else {
      item.alert = { ...item.alert, ...alert };
    }
    if (fresh) item.node.classList.add("fresh");
    this.render(item);
    return item;
  }

  // Put the cards in urgency order, moving only those out of place (a moved
  // node restarts its animation, and the cards that stay must stay still).
  arrange() {
    if (this.loading) return;
    const order = this.ordered();
    order.forEach((item, index) => {
      const here = this.list.children[index];
      if (here !== item.node) this.list.insertBefore(item.node, here || null);
      item.node.dataset.rank = String(index + 1);
    });
    // The newest unanswered alert is the one thing that moves.
    let newest = null;
    for (const item of order) {
      if (item.alert.state === "raised" && (!newest || receivedAt(item.alert) > receivedAt(newest.alert))) newest = item;
    }
    for (const item of order) item.node.classList.toggle("newest", item === newest);
    const target = this.target();
    for (const item of order) {
      item.node.classList.toggle("selected", item === target && this.selected !== null);
      item.node.classList.toggle("target", item === target);
    }
  }

  // The alert the keyboard acts on: the selected one, else the top of the board.
  target() {
    const selected = this.items.get(this.selected);
    if (selected && OPEN.has(selected.alert.state)) return selected;
    const first = this.ordered()[0];
    return first && OPEN.has(first.alert.state) ? first : null;
  }

  select(alertId) {
    this.selected = this.items.has(alertId) ? alertId : null;
    this.arrange();
  }

  // Select the card `step` places below (negative: above) the current target.
  move(step) {
    const order = this.ordered().filter((item) => OPEN.has(item.alert.state));
    if (!order.length) return;
    const index = order.indexOf(this.target());
    const next = order[Math.min(order.length - 1, Math.max(0, index + step))];
    this.select(next.alert.alert_id);
    next.node.scrollIntoView({ block: "nearest" });
  }

  repeat(duplicate) {
    const item = this.items.get(duplicate.duplicate_of);
    if (!item) return null;
    item.repeats += 1;
    this.flash(item);
    this.render(item);
    return item;
  }

  // Returns [item, escalated] or null for an alert this board does not hold.
  applyUpdate(update) {
    const item = this.items.get(update.alert_id);
    if (!item) return null;
    const escalated = update.level > item.alert.level;
    item.alert = { ...item.alert, state: update.state, level: update.level };
    item.history.push(update);
    if (escalated && update.state === "raised") this.flash(item); // nobody has taken it
    this.render(item);
    return [item, escalated];
  }

  // A supervisor's edit of a plan, pushed to every board: the cards of these buttons show it.
  setPlan(buttons, plan) {
    const shown = new Set(buttons);
    for (const item of this.items.values()) {
      if (!shown.has(item.alert.button)) continue;
      item.alert = { ...item.alert, plan };
      this.render(item);
    }
  }

  // A site's false alarms of 12 months, after a new false outcome.
  setFalseAlarms(site, count) {
    for (const item of this.items.values()) {
      const name = (item.alert.site || this.siteOf(item.alert.button) || {}).name;
      if (name !== site) continue;
      item.alert = { ...item.alert, false_alarms_12m: count };
      this.render(item);
    }
  }

  flash(item) {
    item.node.classList.remove("flash");
    void item.node.offsetWidth;
    item.node.classList.add("flash");
  }

  build(item) {
    const alert = item.alert;
    const node = el("li", "alert");
    node.dataset.alertId = alert.alert_id;
    node.dataset.button = alert.button;
    const head = el("div", "alert-head");
    item.kindTag = el("span", `tag kind-${alert.kind}`, alert.kind.replace("_", " "));
    item.urgency = el("span", "tag urgency");
    const site = alert.site || this.siteOf(alert.button);
    item.siteName = el("strong", "site-name", site ? site.name : alert.button);
    item.stateTag = el("span", "tag state");
    head.append(item.kindTag, item.urgency, item.siteName, item.stateTag);
    const meta = el("div", "alert-meta");
    const where = site ? [site.kind, site.district, site.address].filter(Boolean).join(" · ") : "";
    if (alert.button) meta.append(el("span", "button-id", alert.button));
    if (where) meta.append(document.createTextNode(`${alert.button ? " · " : ""}${where}`));
    meta.append(document.createTextNode(" · pressed "));
    const time = el("time", "pressed", clockTime(alert.pressed_at));
    time.dateTime = new Date(alert.pressed_at / 1000).toISOString();
    meta.append(time);
    item.repeatText = el("div", "repeat");
    // A mass outage (many buttons of a district silent together): its live count and list of buttons.
    item.outageText = el("div", "outage");
    item.outageText.hidden = alert.kind !== "mass_outage";
    item.record = el("div", "site-record");
    item.planBox = el("section", "plan");
    item.planBox.hidden = true;
    item.planView = new PlanView(item.planBox, {
      save: (key, plan) => this.savePlan(key, plan),
      canEdit: () => this.role === "supervisor",
    });
    item.historyList = el("ul");
    const history = el("div", "alert-history");
    history.append(item.historyList);
    item.actions = el("div", "actions");
    item.error = el("p", "error");
    item.error.hidden = true;
    item.form = el("form");
    item.form.hidden = true;
    node.addEventListener("animationend", (event) => {
      if (event.animationName === "flash") node.classList.remove("flash");
    });
    node.addEventListener("pointerdown", () => this.select(alert.alert_id));
    node.append(head, meta, item.outageText, item.record, item.planBox, item.repeatText, history, item.actions, item.form, item.error);
    return node;
  }

  render(item) {
    const alert = item.alert;
    const node = item.node;
    node.dataset.state = alert.state;
    node.dataset.level = String(alert.level || 0);
    for (const cls of [...node.classList]) if (cls.startsWith("state-")) node.classList.remove(cls);
    node.classList.add(`state-${alert.state}`);
    item.stateTag.textContent = STATE_LABEL[alert.state] || alert.state;
    this.showUrgency(item);
    item.repeatText.textContent = item.repeats ? `Pressed again ×${item.repeats}` : "";
    if (alert.kind === "mass_outage") item.outageText.textContent = outageLine(item);
    item.record.textContent = falseAlarmText(alert.false_alarms_12m);
    item.record.classList.toggle("warn", (alert.false_alarms_12m || 0) > 0);
    if (item.shownPlan !== alert.plan) {
      item.shownPlan = alert.plan;
      item.planView.show(alert.plan);
    }
    item.historyList.replaceChildren(
      ...item.history.filter((u) => alert.kind !== "mass_outage" || !u.note.startsWith("mass outage")).slice(-3).map((u) => {
        if (u.operator === "relay" && u.state === "raised" && u.level) { // the relay's escalation step
          return el("li", "escalation", `${clockTime(u.at)} ${u.note || `escalated to level ${u.level}`}`);
        }
        const what = u.state === alert.state && u.note && !u.unit && !u.outcome ? "note" : STATE_LABEL[u.state] || u.state;
        const by = u.operator ? ` by ${u.operator}` : "";
        const unit = u.unit ? `, unit ${u.unit}` : "";
        const note = u.note ? `: “${u.note}”` : "";
        const outcome = u.outcome ? ` (${[u.outcome, u.category].filter(Boolean).join(": ").replace("_", " ")})` : "";
        return el("li", "", `${clockTime(u.at)} ${what}${outcome}${by}${unit}${note}`);
      }),
    );
    if (item.shownState !== alert.state) {
      item.shownState = alert.state;
      this.renderActions(item);
    }
    if (!OPEN.has(alert.state) && !item.removal) {
      item.removal = setTimeout(() => this.remove(alert.alert_id), CLOSED_LINGER_MS);
    }
    this.updateCount();
    this.arrange();
  }

  showUrgency(item) {
    const reason = urgencyReason(item.alert, Date.now());
    item.urgency.textContent = reason.text;
    item.urgency.className = `tag urgency ${reason.tone}`;
    item.urgency.title = item.alert.level
      ? `Escalated to level ${item.alert.level}: not acknowledged in time`
      : "Unanswered alerts come first, then higher escalation levels, then the oldest";
  }

  renderActions(item) {
    const alert = item.alert;
    item.form.hidden = true;
    const buttons = [];
    for (const state of NEXT[alert.state] || []) {
      const button = el("button", state === "acknowledged" ? "primary" : "", ACTION_LABEL[state]);
      button.type = "button";
      button.dataset.action = state;
      if (state === "false_alarm" && this.role !== "supervisor") {
        button.classList.add("supervisor-only");
        button.title = "Only a supervisor may close an alert as a false alarm";
      }
      button.addEventListener("click", () => {
        if (state === "dispatched") this.showForm(item, "dispatched");
        else if (state in OUTCOME_CHOICES && (state !== "false_alarm" || this.role === "supervisor")) {
          this.showOutcomeForm(item, state);
        } else this.send(item, state, "", "");
      });
      buttons.push(button);
    }
    if (OPEN.has(alert.state)) {
      const note = el("button", "", "Note…");
      note.type = "button";
      note.dataset.action = "note";
      note.addEventListener("click", () => this.showForm(item, "note"));
      buttons.push(note);
    }
    if (OPEN.has(alert.state) && this.talk) buttons.push(this.talkButton(item));
    const watch = el("button", "", "Watch");
    watch.type = "button";
    watch.dataset.action = "watch";
    watch.addEventListener("click", () => this.watch(alert.button));
    buttons.push(watch);
    item.actions.replaceChildren(...buttons);
  }

  /** Press and hold to speak to the alert's button (talk.js); the relay says who may. */
  talkButton(item) {
    const talk = el("button", "talk", "Hold to talk");
    talk.type = "button";
    talk.dataset.action = "talk";
    talk.title = "Hold (or hold T) and speak: the button's speaker plays your voice";
    const release = () => this.talk.release();
    talk.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      try {
        talk.setPointerCapture(event.pointerId); // a release outside the button still ends the talk
      } catch (error) { /* no active pointer (a synthetic event): pointerup still ends it */ }
      this.talk.press(item.alert.button, this.talkView(item));
    });
    for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) talk.addEventListener(name, release);
    return talk;
  }

  talkView(item) {
    return {
      talking: (on) => {
        item.node.classList.toggle("talking", on);
        if (on) item.error.hidden = true;
      },
      refused: (text) => {
        item.error.textContent = text;
        item.error.hidden = false;
      },
    };
  }

  /** T pressed: talk about the selected alert, else the first one taken, else the top of the board. */
  talkTarget() {
    const selected = this.items.get(this.selected);
    if (selected && OPEN.has(selected.alert.state)) return selected;
    const taken = this.ordered().find((item) => ["acknowledged", "dispatched", "on_scene"].includes(item.alert.state));
    return taken || this.target();
  }

  showForm(item, state) {
    const form = item.form;
    const fields = [];
    let unit = null;
    if (state === "dispatched") {
      unit = el("input");
      unit.name = "unit";
      unit.placeholder = "Unit or team sent";
      unit.required = true;
      unit.maxLength = 64;
      fields.push(unit);
    }
    const note = el("input");
    note.name = "note";
    note.placeholder = state === "note" ? "Note for the log" : "Note (optional)";
    note.required = state === "note";
    note.maxLength = 1024;
    fields.push(note);
    const submit = el("button", "primary", state === "note" ? "Add note" : "Dispatch");
    submit.type = "submit";
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => { form.hidden = true; });
    form.replaceChildren(...fields, submit, cancel);
    form.onsubmit = (event) => {
      event.preventDefault();
      this.send(item, state, unit ? unit.value : "", note.value);
    };
    form.hidden = false;
    (unit || note).focus();
  }

  // Closing an alert records how it ended (genuine, false, test): the relay refuses it otherwise.
  showOutcomeForm(item, state) {
    const form = item.form;
    const outcome = el("select");
    outcome.name = "outcome";
    outcome.required = true;
    const blank = el("option", "", "How did it end?");
    blank.value = "";
    outcome.append(blank, ...OUTCOME_CHOICES[state].map(([value, label]) => {
      const option = el("option", "", label);
      option.value = value;
      return option;
    }));
    const category = el("input");
    category.name = "category";
    category.placeholder = "Category (e.g. harassment)";
    category.maxLength = 64;
    category.hidden = true;
    outcome.addEventListener("change", () => {
      category.hidden = outcome.value !== "genuine";
      category.required = outcome.value === "genuine";
    });
    const note = el("input");
    note.name = "note";
    note.placeholder = "Notes (optional)";
    note.maxLength = 1024;
    const submit = el("button", "primary", ACTION_LABEL[state]);
    submit.type = "submit";
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => { form.hidden = true; });
    form.replaceChildren(outcome, category, note, submit, cancel);
    form.onsubmit = (event) => {
      event.preventDefault();
      const [kind, falseCategory] = outcome.value.split(":");
      this.send(item, state, "", note.value, { outcome: kind, category: falseCategory || category.value });
    };
    form.hidden = false;
    outcome.focus();
  }

  async send(item, state, unit, note, outcome = {}) {
    item.error.hidden = true;
    const result = await this.act(item.alert.alert_id, state, unit, note, outcome);
    if (result.ok) {
      item.form.hidden = true;
      return;
    }
    item.error.textContent = result.error;
    item.error.hidden = false;
  }

  remove(alertId) {
    const item = this.items.get(alertId);
    if (!item) return;
    clearTimeout(item.removal);
    item.node.remove();
    this.items.delete(alertId);
    if (this.selected === alertId) this.selected = null;
    this.updateCount();
    this.arrange();
    this.onChange();
  }

  onChange() {}

  updateCount() {
    let open = 0;
    for (const item of this.items.values()) if (OPEN.has(item.alert.state)) open += 1;
    this.count.textContent = String(open);
    this.empty.hidden = this.items.size > 0;
  }

  tick() {
    for (const item of this.items.values()) this.showUrgency(item);
  }
}
