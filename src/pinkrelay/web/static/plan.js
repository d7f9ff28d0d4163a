// The action plan on an alert's card: steps to follow, whom to call, notes; and
// the site's false alarms of the last 12 months (police withdraw response from
// sites with repeated false calls, so the operator must see the record at once).
//
// Both arrive with the alert itself. A supervisor can edit the plan here: one
// step per line, one contact per line as "Name: phone". The relay stores and
// audits the edit and pushes it to every board (a "plan" message).

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function falseAlarmText(count) {
  if (count === undefined || count === null) return "";
  if (!count) return "No false alarms from this site in 12 months";
  return `${count} false alarm${count === 1 ? "" : "s"} from this site in 12 months`;
}

function contactLine(contact) {
  return contact.phone ? `${contact.name}: ${contact.phone}` : contact.name;
}

export function parseContacts(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
    const at = line.lastIndexOf(":");
    return at < 0 ? { name: line, phone: "" } : { name: line.slice(0, at).trim(), phone: line.slice(at + 1).trim() };
  });
}

export class PlanView {
  // box: the card's plan element; save(key, plan) -> {ok, error}; canEdit() -> bool.
  constructor(box, { save, canEdit }) {
    this.box = box;
    this.save = save;
    this.canEdit = canEdit;
    this.plan = null;
    this.editing = false;
  }

  show(plan) {
    this.plan = plan || null;
    if (!this.editing) this.render();
  }

  render() {
    const plan = this.plan;
    this.box.hidden = !plan;
    if (!plan) {
      this.box.replaceChildren();
      return;
    }
    const parts = [el("h3", "plan-title", "Action plan")];
    if (plan.source === "edited") {
      const when = new Date(plan.edited_at / 1000).toLocaleString("en-GB", { hour12: false });
      parts.push(el("p", "plan-source muted", `edited by ${plan.edited_by}, ${when}`));
    }
    if (plan.steps.length) {
      const steps = el("ol", "plan-steps");
      steps.append(...plan.steps.map((step) => el("li", "", step)));
      parts.push(steps);
    }
    if (plan.contacts.length) {
      const contacts = el("ul", "plan-contacts");
      contacts.append(...plan.contacts.map((contact) => {
        const line = el("li");
        line.append(el("span", "contact-name", contact.name));
        if (contact.phone) line.append(document.createTextNode(" "), el("span", "contact-phone", contact.phone));
        return line;
      }));
      parts.push(contacts);
    }
    if (plan.notes) parts.push(el("p", "plan-notes", plan.notes));
    if (this.canEdit()) {
      const edit = el("button", "plan-edit", "Edit plan");
      edit.type = "button";
      edit.dataset.action = "edit-plan";
      edit.addEventListener("click", () => this.openEditor());
      parts.push(edit);
    }
    this.box.replaceChildren(...parts);
  }

  openEditor() {
    const plan = this.plan;
    this.editing = true;
    const form = el("form", "plan-form");
    const field = (name, label, value, rows) => {
      const area = el("textarea");
      area.name = name;
      area.rows = rows;
      area.value = value;
      area.setAttribute("aria-label", label);
      area.placeholder = label;
      return area;
    };
    const steps = field("steps", "Steps, one per line", plan.steps.join("\n"), 4);
    const contacts = field("contacts", "Contacts, one per line: Name: phone", plan.contacts.map(contactLine).join("\n"), 3);
    const notes = field("notes", "Notes", plan.notes, 2);
    const error = el("p", "error");
    error.hidden = true;
    const submit = el("button", "primary", "Save plan");
    submit.type = "submit";
    const revert = el("button", "", "Use registry plan");
    revert.type = "button";
    revert.hidden = plan.source !== "edited";
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    const done = () => { this.editing = false; this.render(); };
    cancel.addEventListener("click", done);
    const send = async (value) => {
      error.hidden = true;
      const result = await this.save(plan.key, value);
      if (result.ok) done();
      else {
        error.textContent = result.error;
        error.hidden = false;
      }
    };
    revert.addEventListener("click", () => send(null));
    form.onsubmit = (event) => {
      event.preventDefault();
      send({
        steps: steps.value.split("\n").map((s) => s.trim()).filter(Boolean),
        contacts: parseContacts(contacts.value),
        notes: notes.value.trim(),
      });
    };
    const row = el("div", "plan-form-actions");
    row.append(submit, revert, cancel);
    form.append(steps, contacts, notes, row, error);
    this.box.replaceChildren(el("h3", "plan-title", "Edit action plan"), form);
    steps.focus();
  }
}
