// Sound for the control room: one AudioContext for alert beeps and live audio.
// Browsers keep it suspended until the operator interacts with the page, so the
// header's "Sound off" button (or any click) resumes it.

let context = null;
export let beeps = 0;

export function audioContext() {
  if (context === null) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    context = new Ctx({ latencyHint: "interactive" });
    context.addEventListener("statechange", () => document.dispatchEvent(new Event("soundstate")));
  }
  return context;
}

export function soundOn() {
  return audioContext().state === "running";
}

export async function unlock() {
  const ctx = audioContext();
  if (ctx.state !== "running") {
    try { await ctx.resume(); } catch (error) { /* stays suspended until a gesture */ }
  }
  document.dispatchEvent(new Event("soundstate"));
}

// Two-tone alarm: loud enough to hear across a control room, short enough not to mask voices.
export function beep({ repeats = 3, high = 1320, low = 880 } = {}) {
  beeps += 1;
  document.body.dataset.beeps = String(beeps);
  const ctx = audioContext();
  if (ctx.state !== "running") return false;
  const start = ctx.currentTime + 0.01;
  const gain = ctx.createGain();
  gain.connect(ctx.destination);
  gain.gain.value = 0;
  for (let i = 0; i < repeats * 2; i += 1) {
    const t = start + i * 0.16;
    const osc = ctx.createOscillator();
    osc.type = "square";
    osc.frequency.value = i % 2 === 0 ? high : low;
    osc.connect(gain);
    gain.gain.setValueAtTime(0.0, t);
    gain.gain.linearRampToValueAtTime(0.18, t + 0.01);
    gain.gain.setValueAtTime(0.18, t + 0.13);
    gain.gain.linearRampToValueAtTime(0.0, t + 0.15);
    osc.start(t);
    osc.stop(t + 0.16);
  }
  return true;
}
