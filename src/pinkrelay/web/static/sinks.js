// Delivery to the control room's other systems (webhooks, CAP, alarm receiving centres), in the top bar.
// Polls /api/integrations; hidden when the relay has no sinks. A failing sink turns it red and names
// the sink, how many steps wait for it and (on hover) why.
const POLL_MS = 5000;

export class SinkStatus {
  constructor(element) {
    this.el = element;
  }

  start() {
    this.poll();
    setInterval(() => this.poll(), POLL_MS);
  }

  async poll() {
    try {
      const response = await fetch("/api/integrations");
      if (response.ok) this.show((await response.json()).sinks || []);
    } catch {
      // the board's own link shows that the relay is unreachable
    }
  }

  show(sinks) {
    this.el.hidden = sinks.length === 0;
    const failing = sinks.filter((sink) => sink.failing);
    this.el.className = `link sinks ${failing.length ? "down" : "up"}`;
    this.el.textContent = failing.length
      ? `Delivery failing: ${failing.map((sink) => `${sink.name} (${sink.pending} waiting)`).join(", ")}`
      : `Delivery OK to ${sinks.map((sink) => sink.name).join(", ")}`;
    this.el.title = failing.map((sink) => `${sink.name}: ${sink.last_error}`).join("\n");
  }
}
