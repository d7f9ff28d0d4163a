// Sound for the control room: one AudioContext for alarm bursts and live audio.
// Browsers keep it suspended until the operator interacts with the page, so the
// header's "Sound off" button, the sign-in banner (or any click or key) resumes it.
//
// Every burst passes one analyser on its way out, and every request to play is
// logged in `plays` with whether it was heard (the context was running): what
// the page's audio hooks (window.pinkrelay.audio) show to people and to tests.

let context = null;
let output = null;
let analyser = null;
export let beeps = 0;
export const plays = [];
const MAX_LOGGED_PLAYS = 500;

export function audioContext() {
  if (context === null) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    context = new Ctx({ latencyHint: "interactive" });
    context.addEventListener("statechange", () => document.dispatchEvent(new Event("soundstate")));
  }
  return context;
}

function alarmOutput(ctx) {
  if (output === null) {
    analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    analyser.connect(ctx.destination);
    output = analyser;
  }
  return output;
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

// The loudest sample leaving the alarm right now (0 when silent).
export function alarmPeak() {
  if (analyser === null) return 0;
  const samples = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(samples);
  let peak = 0;
  for (const value of samples) peak = Math.max(peak, Math.abs(value));
  return peak;
}

// Two-tone alarm burst: `repeats` high-low pairs of `step` seconds each, at `gain`.
// Loud enough to hear across a control room, short enough not to mask voices.
// `label` says why it played (new, repeat, escalated, pressed again) in the log.
export function beep({ repeats = 3, step = 0.16, gain = 0.18, high = 1320, low = 880, level = 0,
  label = "alert" } = {}) {
  beeps += 1;
  document.body.dataset.beeps = String(beeps);
  const ctx = audioContext();
  const heard = ctx.state === "running";
  plays.push({ at: Date.now(), label, level, repeats, step, gain, heard });
  if (plays.length > MAX_LOGGED_PLAYS) plays.shift();
  if (!heard) return false;
  const start = ctx.currentTime + 0.01;
  const envelope = ctx.createGain();
  envelope.connect(alarmOutput(ctx));
  envelope.gain.value = 0;
  for (let i = 0; i < repeats * 2; i += 1) {
    const t = start + i * step;
    const osc = ctx.createOscillator();
    osc.type = "square";
    osc.frequency.value = i % 2 === 0 ? high : low;
    osc.connect(envelope);
    envelope.gain.setValueAtTime(0.0, t);
    envelope.gain.linearRampToValueAtTime(gain, t + 0.01);
    envelope.gain.setValueAtTime(gain, t + step - 0.03);
    envelope.gain.linearRampToValueAtTime(0.0, t + step - 0.01);
    osc.start(t);
    osc.stop(t + step);
  }
  setTimeout(() => envelope.disconnect(), (repeats * 2 * step + 0.2) * 1000);
  return true;
}
