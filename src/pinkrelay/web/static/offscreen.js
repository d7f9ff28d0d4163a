// "N unanswered out of view": the board scrolls, and in urgency order the newest
// unanswered alert sits below the older ones, so on a laptop it can be out of
// sight while it pulses. This bar counts the unanswered cards the list does not
// show and, clicked, brings the first of them into view. It takes its own line
// under the list, so it never covers a card.

export class OffscreenAlerts {
  constructor(list, bar) {
    this.list = list;
    this.bar = bar;
    this.pending = false;
    const later = () => this.schedule();
    list.addEventListener("scroll", later, { passive: true });
    new ResizeObserver(later).observe(list);
    new MutationObserver(later).observe(list, { childList: true, subtree: true, attributes: true,
      attributeFilter: ["class", "data-state"] });
    bar.addEventListener("click", () => {
      const first = this.hidden()[0];
      if (first) first.scrollIntoView({ block: "nearest" });
    });
  }

  // The unanswered cards wholly outside the list's visible part, in board order.
  hidden() {
    const view = this.list.getBoundingClientRect();
    return [...this.list.querySelectorAll("li.alert.state-raised")].filter((card) => {
      const box = card.getBoundingClientRect();
      return box.bottom > view.bottom + 1 || box.top < view.top - 1;
    });
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.show();
    });
  }

  show() {
    const hidden = this.hidden();
    this.bar.hidden = hidden.length === 0;
    this.bar.textContent = `${hidden.length} unanswered out of view: show`;
  }
}
