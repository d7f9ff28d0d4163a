// Test mode for maintenance, for supervisors: a button in test mode pages
// nobody (its presses are journalled as tests). The list shows every button in
// test mode, who set it and why; the form puts one in test mode or back to live.
// The relay audits each change and tells every board ("button-mode" messages).

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class Maintenance {
  constructor(box, count, { csrf }) {
    this.box = box;
    this.count = count;
    this.csrf = csrf;
    this.modes = new Map(); // button -> {mode, set_by, note}
    this.buttons = [];
    this.supervisor = false;
  }

  load(sites, role) {
    this.supervisor = role === "supervisor";
    this.buttons = sites.map((s) => s.button);
    this.modes = new Map(sites.filter((s) => s.mode === "test").map((s) => [s.button, { mode: "test" }]));
    this.render();
  }

  changed(message) {
    if (message.mode === "test") this.modes.set(message.button, message);
    else this.modes.delete(message.button);
    this.render();
  }

  async send(button, mode, note) {
    const response = await fetch(`/api/buttons/${encodeURIComponent(button)}/mode`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": this.csrf() },
      body: JSON.stringify({ mode, note }),
    }).catch(() => null);
    if (!response) return "The relay did not answer; the mode was not changed.";
    if (response.ok) return "";
    const body = await response.json().catch(() => ({}));
    return body.error || `refused (${response.status})`;
  }

  render() {
    this.count.textContent = String(this.modes.size);
    this.box.hidden = !this.supervisor;
    if (!this.supervisor) return;
    const list = el("ul", "test-mode-list");
    for (const [button, entry] of [...this.modes.entries()].sort()) {
      const line = el("li");
      line.dataset.button = button;
      const why = [entry.set_by && `by ${entry.set_by}`, entry.note].filter(Boolean).join(": ");
      line.append(el("span", "", `${button} in test mode${why ? ` (${why})` : ""} `));
      const live = el("button", "", "Back to live");
      live.type = "button";
      live.addEventListener("click", async () => { error.textContent = await this.send(button, "live", ""); });
      line.append(live);
      list.append(line);
    }
    const form = el("form", "test-mode-form");
    const select = el("select");
    select.name = "button";
    select.setAttribute("aria-label", "Button");
    select.append(...this.buttons.filter((b) => !this.modes.has(b)).map((b) => {
      const option = el("option", "", b);
      option.value = b;
      return option;
    }));
    const note = el("input");
    note.name = "note";
    note.placeholder = "Why (e.g. battery change)";
    note.maxLength = 200;
    const submit = el("button", "", "Test mode");
    submit.type = "submit";
    const error = el("span", "error");
    form.append(select, note, submit);
    form.onsubmit = async (event) => {
      event.preventDefault();
      error.textContent = await this.send(select.value, "test", note.value);
    };
    this.box.replaceChildren(el("h3", "plan-title", "Maintenance: test mode pages nobody"), list, form, error);
  }
}
