// The alarm that insists: it repeats while any alert on this board is unanswered
// (state "raised") and stops the moment the last one is acknowledged by anyone.
//
// An escalated alert is more insistent than a new one: more tones per burst,
// faster tones, louder, and bursts closer together. The operator may mute this
// workstation's alarm, never for longer than MUTE_SECONDS, and any escalation
// of an unanswered alert ends the mute at once: it means nobody has taken it.
import { beep } from "./sound.js";

export const MUTE_SECONDS = 120;
// By the highest escalation level among unanswered alerts (the last entry for any higher level).
export const PATTERNS = [
  { repeats: 3, step: 0.16, gain: 0.18, every: 3.0 },
  { repeats: 4, step: 0.13, gain: 0.26, every: 2.0 },
  { repeats: 6, step: 0.11, gain: 0.34, every: 1.5 },
];

export function pattern(level) {
  return PATTERNS[Math.min(Math.max(level, 0), PATTERNS.length - 1)];
}

export class Alarm {
  // `highestUnanswered()` returns the highest level among unanswered alerts, or -1 when there is none.
  constructor(highestUnanswered) {
    this.highestUnanswered = highestUnanswered;
    this.mutedUntil = 0;
    this.timer = null;
    this.level = -1;
    this.onChange = () => {};
  }

  muted() {
    return this.mutedUntil > Date.now();
  }

  // Seconds of mute left (0 when not muted).
  muteLeft() {
    return Math.max(0, Math.ceil((this.mutedUntil - Date.now()) / 1000));
  }

  mute(seconds = MUTE_SECONDS) {
    this.mutedUntil = Date.now() + Math.min(seconds, MUTE_SECONDS) * 1000;
    this.schedule(this.muteLeft());
    this.onChange();
  }

  unmute() {
    this.mutedUntil = 0;
    this.onChange();
    this.ring("unmuted");
  }

  // A new unanswered alert (or sound just switched on): play now and start the cadence over.
  ring(label = "new") {
    const level = this.highestUnanswered();
    this.level = level;
    if (level < 0) return this.stop();
    if (!this.muted()) this.play(level, label);
    this.schedule(this.muted() ? this.muteLeft() : pattern(level).every);
  }

  // An unanswered alert escalated: ring at once at its new level, and end any mute.
  escalated() {
    if (this.mutedUntil) {
      this.mutedUntil = 0;
      this.onChange();
    }
    this.ring("escalated");
  }

  // The board changed: stop when nothing is unanswered, ring at once on a higher level.
  update() {
    const level = this.highestUnanswered();
    if (level < 0) return this.stop();
    if (level > this.level) return this.ring(level > 0 ? "escalated" : "new");
    this.level = level;
    if (this.timer === null) this.schedule(pattern(level).every);
  }

  // One burst that does not repeat (a repeated press of an alert already taken).
  once(label) {
    if (!this.muted()) this.play(Math.max(this.level, 0), label);
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.level = -1;
  }

  play(level, label) {
    const { repeats, step, gain } = pattern(level);
    beep({ repeats, step, gain, level, label });
  }

  schedule(seconds) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), seconds * 1000);
  }

  tick() {
    this.timer = null;
    const wasMuted = this.mutedUntil !== 0 && !this.muted();
    if (wasMuted) {
      this.mutedUntil = 0;
      this.onChange();
    }
    const level = this.highestUnanswered();
    if (level < 0) return this.stop();
    this.level = level;
    if (this.muted()) return this.schedule(this.muteLeft());
    this.play(level, wasMuted ? "mute ended" : "repeat");
    this.schedule(pattern(level).every);
  }
}
