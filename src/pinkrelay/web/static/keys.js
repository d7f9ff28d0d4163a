// Keyboard shortcuts for the alert board, for an operator with a headset on and
// no time to aim a mouse:
//
//   A  acknowledge: the selected alert if it is unanswered, else the most urgent
//      unanswered one (the top of the board); that alert becomes the selected one,
//      so a D or R right after acts on the alert just taken, although it moved.
//   D  dispatch the selected alert (opens its unit form), R resolve it; without a
//      selection both act on the top of the board.
//   T  hold to talk to the button of the selected alert, else of the first alert
//      taken (acknowledged, dispatched, on scene), else of the top of the board;
//      talk-back ends when T is let go (or the window loses focus).
//   Up/Down (or K/J) select another alert; Escape clears the selection.
//
// A key does exactly what the card's own button does (it clicks it), so the
// server's rules and the card's forms apply unchanged. Keys typed into a form
// field, with a modifier, or held down (auto-repeat) do nothing here.

const KEY_ACTIONS = { a: "acknowledged", d: "dispatched", r: "resolved" };
const ACTION_WORDS = { acknowledged: "acknowledge", dispatched: "dispatch", resolved: "resolve" };

function typing(target) {
  return target instanceof HTMLElement
    && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

export class BoardKeys {
  constructor(board) {
    this.board = board;
  }

  attach(doc) {
    doc.addEventListener("keydown", (event) => this.onKey(event));
    doc.addEventListener("keyup", (event) => {
      if (event.key.toLowerCase() === "t" && this.board.talk) this.board.talk.release();
    });
    window.addEventListener("blur", () => this.board.talk && this.board.talk.release());
  }

  onKey(event) {
    if (event.repeat || event.ctrlKey || event.altKey || event.metaKey || typing(event.target)) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (key === "ArrowDown" || key === "j") this.board.move(1);
    else if (key === "ArrowUp" || key === "k") this.board.move(-1);
    else if (key === "Escape") this.board.select(null);
    else if (key in KEY_ACTIONS) this.act(KEY_ACTIONS[key], key);
    else if (key === "t" && this.board.talk) this.talk();
    else return;
    event.preventDefault();
  }

  talk() {
    const item = this.board.talkTarget();
    if (!item) return;
    this.board.select(item.alert.alert_id);
    this.board.talk.press(item.alert.button, this.board.talkView(item));
  }

  act(action, key) {
    const board = this.board;
    let item = board.target();
    if (action === "acknowledged" && (!item || item.alert.state !== "raised")) {
      item = board.ordered().find((candidate) => candidate.alert.state === "raised") || item;
    }
    if (!item) return;
    board.select(item.alert.alert_id);
    const button = item.actions.querySelector(`button[data-action="${action}"]`);
    if (button) {
      button.click();
      return;
    }
    const state = item.alert.state.replace("_", " ");
    const hint = item.alert.state === "raised" ? "; acknowledge it first (A)" : "";
    item.error.textContent = `${key.toUpperCase()}: cannot ${ACTION_WORDS[action]} an alert that is ${state}${hint}`;
    item.error.hidden = false;
  }
}
