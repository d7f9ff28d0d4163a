// Talk-back: hold "Hold to talk" on an alert (or the T key) and speak to its button.
//
// The microphone opens at the press and closes at the release, so the
// browser's recording indicator is on exactly while the operator speaks.
// Its audio goes MediaStreamTrackProcessor -> AudioData (downmixed to mono)
// -> WebCodecs AudioEncoder (Opus, 20 ms, 32 kbit/s) -> one binary WebSocket
// message per packet, with the capture time of its first sample (see
// pinkrelay/web/talk.py for the framing). The relay decides who may talk:
// while its answer is on the way the packets wait here, so the first word is
// not lost; a refusal drops them and shows the reason on the card.
//
// Capture times: Chromium stamps AudioData in the clock of performance.now(),
// so performance.timeOrigin + timestamp is the wall-clock capture time. A
// browser with another time base is calibrated at the first buffer instead
// (arrival time minus the buffer's duration).

const FLAG_TALKBACK = 8;
const BITRATE = 32000;
const FRAME_US = 20000;
/** Packets kept while the relay has not answered yet (10 s of speech at most). */
const MAX_WAITING = 500;

function toMono(data) {
  const frames = data.numberOfFrames;
  const samples = new Float32Array(frames);
  data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
  return new AudioData({
    format: "f32-planar", sampleRate: data.sampleRate, numberOfFrames: frames, numberOfChannels: 1,
    timestamp: data.timestamp, data: samples,
  });
}

export function talkSupported() {
  return typeof AudioEncoder !== "undefined" && typeof MediaStreamTrackProcessor !== "undefined"
    && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

export class TalkBack {
  constructor(sendJson, sendBinary) {
    this.sendJson = sendJson;
    this.sendBinary = sendBinary;
    this.state = "idle"; // idle | asking | open
    this.button = null;
    this.view = null;
    this.waiting = [];
    this.releasing = false;
    this.capture = null;
    this.sent = 0;
    /** One per press: a release that finishes late must not end the next press's talk. */
    this.generation = 0;
    this.show();
  }

  /** The operator pressed: ask the relay and open the microphone at once. */
  press(button, view) {
    if (this.state !== "idle") {
      if (this.button === button) return;
      this.release();
    }
    if (!talkSupported()) {
      view.refused("This browser cannot send talk-back: it needs WebCodecs audio (Chromium 94 or newer) "
        + "and a page served over HTTPS or from localhost");
      return;
    }
    this.state = "asking";
    this.generation += 1;
    this.button = button;
    this.view = view;
    this.waiting = [];
    this.releasing = false;
    view.talking(true);
    this.sendJson({ type: "talk-start", button });
    this.capture = this.open();
    this.show();
  }

  /** The operator let go: the last packet goes, then the talk ends. */
  async release() {
    if (this.state === "idle" || this.releasing) return;
    this.releasing = true;
    const generation = this.generation;
    const capture = this.capture;
    this.capture = null;
    await this.close(capture);
    if (this.state === "open" && this.generation === generation) this.finish();
    // still asking: finish() runs when the relay's answer arrives
  }

  finish() {
    this.sendJson({ type: "talk-stop" });
    this.reset();
  }

  reset() {
    if (this.view) this.view.talking(false);
    this.state = "idle";
    this.button = null;
    this.talkId = null;
    this.view = null;
    this.waiting = [];
    this.releasing = false;
    this.show();
  }

  /** Answers of the relay: {type: "talk", state: open | refused | closed}. */
  onMessage(message) {
    if (message.button !== this.button) return;
    if (message.state === "open" && this.state === "asking") {
      this.state = "open";
      this.talkId = message.talk_id;
      for (const packet of this.waiting) this.transmit(packet);
      this.waiting = [];
      if (this.releasing) this.finish();
      this.show();
    } else if (message.state === "refused") {
      const view = this.view;
      const capture = this.capture;
      this.capture = null;
      this.close(capture);
      this.reset();
      if (view) view.refused(message.message);
    } else if (message.state === "closed" && this.state === "open" && message.talk_id === this.talkId
               && !this.releasing) {
      const view = this.view;
      const capture = this.capture;
      this.capture = null;
      this.close(capture);
      this.reset();
      if (view && message.reason && message.reason !== "released") view.refused(`Talk-back ended: ${message.reason}`);
    }
  }

  show() {
    document.body.dataset.talk = this.state;
    document.body.dataset.talkPackets = String(this.sent);
  }

  transmit(packet) {
    this.sendBinary(packet);
    this.sent += 1;
    document.body.dataset.talkPackets = String(this.sent);
  }

  onPacket(packet) {
    if (this.state === "open") this.transmit(packet);
    else if (this.state === "asking" && this.waiting.length < MAX_WAITING) this.waiting.push(packet);
  }

  async open() {
    const capture = { stream: null, reader: null, encoder: null, base: null, done: false };
    try {
      capture.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      });
    } catch (error) {
      this.failed(`the microphone is not available (${error.message || error})`);
      return capture;
    }
    if (capture.done) {
      for (const track of capture.stream.getTracks()) track.stop();
      return capture;
    }
    const track = capture.stream.getAudioTracks()[0];
    capture.reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    capture.encoder = new AudioEncoder({
      output: (chunk) => this.onChunk(capture, chunk),
      error: (error) => this.failed(`the Opus encoder failed (${error.message || error})`),
    });
    this.pump(capture);
    return capture;
  }

  async pump(capture) {
    const { reader, encoder } = capture;
    for (;;) {
      let result;
      try {
        result = await reader.read();
      } catch (error) {
        return;
      }
      if (result.done || capture.done) {
        if (result.value) result.value.close();
        return;
      }
      const data = result.value;
      if (capture.base === null) {
        const nowUs = (performance.timeOrigin + performance.now()) * 1000;
        const inPerformanceClock = Math.abs(performance.now() * 1000 - data.timestamp) < 5e6;
        capture.base = inPerformanceClock
          ? performance.timeOrigin * 1000
          : nowUs - data.timestamp - (data.duration || 0);
        encoder.configure({
          codec: "opus", sampleRate: data.sampleRate, numberOfChannels: 1, bitrate: BITRATE,
          opus: { frameDuration: FRAME_US },
        });
      }
      const mono = toMono(data);
      data.close();
      if (encoder.state === "configured") encoder.encode(mono);
      mono.close();
    }
  }

  onChunk(capture, chunk) {
    const packet = new Uint8Array(12 + chunk.byteLength);
    const view = new DataView(packet.buffer);
    view.setUint8(0, 1);
    view.setUint8(1, FLAG_TALKBACK);
    view.setUint16(2, 0);
    view.setBigUint64(4, BigInt(Math.max(0, Math.round(capture.base + chunk.timestamp))));
    chunk.copyTo(packet.subarray(12));
    this.onPacket(packet);
  }

  async close(capture) {
    if (!capture) return;
    const opened = await capture;
    opened.done = true;
    if (opened.reader) opened.reader.cancel().catch(() => {});
    if (opened.stream) for (const track of opened.stream.getTracks()) track.stop();
    if (opened.encoder && opened.encoder.state === "configured") {
      try {
        await opened.encoder.flush(); // the last 20 ms go out before talk-stop
      } catch (error) { /* closed meanwhile */ }
    }
    if (opened.encoder && opened.encoder.state !== "closed") opened.encoder.close();
  }

  /** The WebSocket closed: the relay has ended any talk; close the microphone and say so. */
  abandon(reason) {
    if (this.state === "idle") return;
    const view = this.view;
    const wasReleasing = this.releasing;
    const capture = this.capture;
    this.capture = null;
    this.close(capture);
    this.reset();
    if (view && !wasReleasing) view.refused(`Talk-back ended: ${reason}`);
  }

  failed(reason) {
    const view = this.view;
    if (this.state === "idle") return;
    if (this.state === "open" || this.state === "asking") this.sendJson({ type: "talk-stop" });
    const capture = this.capture;
    this.capture = null;
    this.close(capture);
    this.reset();
    if (view) view.refused(`Talk-back stopped: ${reason}`);
  }
}
