// Live video and audio of buttons, decoded in the page with WebCodecs.
//
// Why WebCodecs and not Media Source Extensions: the relay already has each
// encoded frame with its capture time. WebCodecs decodes an H.264 access unit
// (Annex B, exactly as the button sent it) the moment it arrives and hands the
// frame back to draw, so the picture is as fresh as the network allows. MSE
// would need the server to mux fragmented MP4 and the browser's media element
// buffers before it plays, which adds hundreds of milliseconds the operator
// cannot see. With WebCodecs every frame keeps its capture time, so the
// latency under the picture is measured, not estimated.
//
// Binary message from the server: 14-byte header, then the payload.
//   u8 version (2) | u8 flags (1 keyframe, 2 audio, 4 catch-up) | u32 track id (protocol v2 ids exceed 16 bits)
//   | u64 capture time in µs since the UNIX epoch
import { audioContext } from "./sound.js";

const HEADER_BYTES = 14;
const FLAG_KEY = 1;
const FLAG_AUDIO = 2;
const FLAG_CATCHUP = 4;
const MAX_VIDEO_QUEUE = 30;
const LATENCY_SAMPLES = 90;
// Tiles that alerts open by themselves (new ones, and those open at sign-in);
// the operator opens more by hand, up to the relay's 16 per board.
export const AUTO_OPEN_TILES = 6;

function nowUs() {
  return (performance.timeOrigin + performance.now()) * 1000;
}

function fromBase64(text) {
  if (!text) return new Uint8Array(0);
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
  return out;
}

// NAL units of an Annex B buffer, in order (payload after each start code).
function* nalUnits(bytes) {
  const n = bytes.length;
  let start = -1;
  let i = 0;
  while (i + 2 < n) {
    if (bytes[i] === 0 && bytes[i + 1] === 0 && bytes[i + 2] === 1) {
      if (start >= 0) {
        let end = i;
        while (end > start && bytes[end - 1] === 0) end -= 1;
        yield bytes.subarray(start, end);
      }
      i += 3;
      start = i;
    } else {
      i += 1;
    }
  }
  if (start >= 0 && start < n) yield bytes.subarray(start, n);
}

function hex2(value) {
  return value.toString(16).toUpperCase().padStart(2, "0");
}

// "avc1.PPCCLL" from the first SPS (profile, constraint flags, level); null without one.
export function codecFromAnnexB(bytes) {
  for (const nal of nalUnits(bytes)) {
    const type = nal[0] & 0x1f;
    if (type === 7 && nal.length >= 4) return `avc1.${hex2(nal[1])}${hex2(nal[2])}${hex2(nal[3])}`;
    if (type === 1 || type === 5) break;
  }
  return null;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function median(values) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)];
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

class LiveStream {
  constructor(wall, button, site) {
    this.wall = wall;
    this.button = button;
    this.decoded = 0;
    this.drawn = 0;
    this.catchupFrames = 0;
    this.dropped = 0;
    this.audioFrames = 0;
    this.latencies = [];
    this.catchup = new Set();
    this.muted = false;
    this.playAt = 0;
    this.vdec = null;
    this.adec = null;
    this.video = null;
    this.audio = null;
    this.statsPending = false;
    this.signature = null;
    this.drawnSinceStream = 0;

    this.el = el("article", "stream nostream");
    this.el.dataset.button = button;
    this.el.dataset.decoded = "0";
    this.el.dataset.drawn = "0";
    const header = el("header");
    this.title = el("span", "name", site ? site.name : button);
    this.title.title = site ? `${site.name} (${button})` : button;
    this.title.append(el("span", "id", button));
    header.append(this.title);
    this.muteButton = el("button", "mute", "Mute");
    this.muteButton.type = "button";
    this.muteButton.addEventListener("click", () => this.toggleMute());
    const close = el("button", "close", "Close");
    close.type = "button";
    close.title = "Stop watching this button";
    close.addEventListener("click", () => this.wall.close(this.button));
    header.append(this.muteButton);
    if (wall.record) {
      const record = el("button", "record", "Record");
      record.type = "button";
      record.title = "Record this stream as evidence (from its pre-roll), audited";
      record.addEventListener("click", async () => {
        record.disabled = true;
        record.textContent = await wall.record(button);
      });
      header.append(record);
    }
    header.append(close);
    this.canvas = el("canvas");
    this.canvas.width = 640;
    this.canvas.height = 360;
    this.ctx = this.canvas.getContext("2d", { alpha: false });
    this.ctx.fillStyle = "#05070a";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.status = el("div", "status", "Opening stream…");
    this.stats = el("div", "stats");
    this.framesText = el("span", "frames", "0 frames decoded");
    this.latencyText = el("span", "latency", "latency —");
    this.audioText = el("span", "audio", "no audio");
    this.stats.append(this.framesText, this.latencyText, this.audioText);
    this.el.append(header, this.canvas, this.status, this.stats);
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  onStream(message) {
    const signature = JSON.stringify(message.tracks.map((t) => [t.track_id, t.kind, t.codec, t.width, t.height,
      t.sample_rate, t.channels]));
    const video = message.tracks.find((t) => t.kind === "video") || null;
    if (signature === this.signature && (this.vdec || this.adec)) {
      // Described again with the same tracks (e.g. once its encoder knows its
      // parameter sets): keep decoding, nothing to reset.
      if (video) this.extradata = fromBase64(video.extradata);
      return;
    }
    this.signature = signature;
    this.drawnSinceStream = 0;
    this.closeDecoders();
    this.video = video;
    this.audio = message.tracks.find((t) => t.kind === "audio") || null;
    this.el.classList.toggle("nostream", !this.video);
    if (!message.tracks.length) {
      this.setStatus("No live stream from this button right now (offline or not sending video); it appears here as soon as it starts.");
      return;
    }
    this.setStatus(this.video ? "Waiting for a keyframe…" : "Audio only");
    if (this.video) this.openVideo(this.video);
    if (this.audio) this.openAudio(this.audio);
  }

  interrupted(reason) {
    this.signature = null;
    this.drawnSinceStream = 0;
    this.closeDecoders();
    this.setStatus(`Stream interrupted (${reason}); reconnecting…`);
  }

  openVideo(track) {
    if (typeof VideoDecoder === "undefined") {
      // Browsers offer WebCodecs only to secure pages: https://, or http:// on 127.0.0.1 or localhost.
      this.setStatus(window.isSecureContext
        ? "This browser cannot decode video (WebCodecs is missing; use a current Chromium or Chrome)."
        : "Video needs a secure page: open the control room over https:// (the relay's --web-cert and --web-key), "
          + "or at http://127.0.0.1 on the relay's own machine.");
      return;
    }
    if (track.width && track.height && (this.canvas.width !== track.width || this.canvas.height !== track.height)) {
      this.canvas.width = track.width;
      this.canvas.height = track.height;
    }
    this.extradata = fromBase64(track.extradata);
    this.codec = codecFromAnnexB(this.extradata);
    this.videoConfigured = false;
    this.waitKey = true;
    this.vdec = new VideoDecoder({
      output: (frame) => this.onFrame(frame),
      error: (error) => this.onVideoError(error),
    });
  }

  openAudio(track) {
    if (typeof AudioDecoder === "undefined") return;
    const config = {
      codec: track.codec === "opus" ? "opus" : "mp4a.40.2",
      sampleRate: track.sample_rate || 48000,
      numberOfChannels: track.channels || 1,
    };
    const description = fromBase64(track.extradata);
    if (description.length) config.description = description;
    this.adec = new AudioDecoder({
      output: (data) => this.onAudio(data),
      error: (error) => { this.audioText.textContent = `audio error: ${error.message}`; },
    });
    try {
      this.adec.configure(config);
      this.audioText.textContent = `${track.codec} ${config.sampleRate / 1000} kHz`;
    } catch (error) {
      this.audioText.textContent = `audio ${track.codec} not supported here`;
      this.adec = null;
    }
  }

  closeDecoders() {
    for (const decoder of [this.vdec, this.adec]) {
      if (decoder && decoder.state !== "closed") {
        try { decoder.close(); } catch (error) { /* already closed */ }
      }
    }
    this.vdec = null;
    this.adec = null;
    this.catchup.clear();
  }

  videoPacket(flags, timestamp, payload) {
    const decoder = this.vdec;
    if (!decoder || decoder.state === "closed") return;
    const key = (flags & FLAG_KEY) !== 0;
    if (this.waitKey && !key) return;
    if (decoder.decodeQueueSize > MAX_VIDEO_QUEUE) {
      // The decoder is behind: skip to the next keyframe rather than show old video.
      this.dropped += 1;
      this.waitKey = true;
      this.wall.requestKeyframe(this.button);
      return;
    }
    let data = payload;
    if (key) {
      const codec = codecFromAnnexB(payload);
      if (codec === null && this.extradata.length) data = concat(this.extradata, payload);
      if (!this.videoConfigured) {
        try {
          decoder.configure({
            codec: this.codec || codec || "avc1.42E01E",
            codedWidth: this.video.width || undefined,
            codedHeight: this.video.height || undefined,
            optimizeForLatency: true,
          });
        } catch (error) {
          this.setStatus(`This browser cannot decode this video (${error.message}).`);
          this.closeDecoders();
          return;
        }
        this.videoConfigured = true;
      }
    }
    this.waitKey = false;
    if (flags & FLAG_CATCHUP) this.catchup.add(timestamp);
    try {
      decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp, data }));
    } catch (error) {
      this.onVideoError(error);
    }
  }

  onVideoError(error) {
    this.setStatus(`Video decoder error (${error.message}); waiting for the next keyframe`);
    this.drawnSinceStream = 0;
    this.closeDecoders();
    if (this.video) this.openVideo(this.video);
    if (this.audio) this.openAudio(this.audio);
    this.wall.requestKeyframe(this.button);
  }

  onFrame(frame) {
    this.decoded += 1;
    const timestamp = frame.timestamp;
    if (this.catchup.delete(timestamp)) {
      // Fast join: frames from the cached GOP are decoded, never shown.
      this.catchupFrames += 1;
      frame.close();
      this.updateStats();
      return;
    }
    const latencyMs = (nowUs() - timestamp) / 1000;
    if (frame.displayWidth !== this.canvas.width || frame.displayHeight !== this.canvas.height) {
      this.canvas.width = frame.displayWidth;
      this.canvas.height = frame.displayHeight;
    }
    this.ctx.drawImage(frame, 0, 0, this.canvas.width, this.canvas.height);
    frame.close();
    this.drawn += 1;
    this.drawnSinceStream += 1;
    this.latencies.push(latencyMs);
    if (this.latencies.length > LATENCY_SAMPLES) this.latencies.shift();
    if (this.drawnSinceStream === 1) this.setStatus("");
    this.updateStats();
  }

  onAudio(data) {
    this.audioFrames += 1;
    this.el.dataset.audioFrames = String(this.audioFrames);
    const ctx = audioContext();
    if (this.muted || ctx.state !== "running") {
      data.close();
      return;
    }
    if (!this.gain) {
      this.gain = ctx.createGain();
      this.gain.connect(ctx.destination);
    }
    const channels = data.numberOfChannels;
    const buffer = ctx.createBuffer(channels, data.numberOfFrames, data.sampleRate);
    for (let c = 0; c < channels; c += 1) {
      data.copyTo(buffer.getChannelData(c), { planeIndex: c, format: "f32-planar" });
    }
    data.close();
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.gain);
    const now = ctx.currentTime;
    // A 60 ms jitter buffer; start over when it ran dry or drifted too far ahead.
    if (this.playAt < now + 0.01 || this.playAt > now + 0.4) this.playAt = now + 0.06;
    source.start(this.playAt);
    this.playAt += buffer.duration;
  }

  audioPacket(flags, timestamp, payload) {
    const decoder = this.adec;
    if (!decoder || decoder.state !== "configured" || decoder.decodeQueueSize > 50) return;
    try {
      decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: payload }));
    } catch (error) {
      this.audioText.textContent = `audio error: ${error.message}`;
    }
  }

  toggleMute() {
    this.muted = !this.muted;
    this.muteButton.textContent = this.muted ? "Unmute" : "Mute";
  }

  updateStats() {
    const data = this.el.dataset;
    data.decoded = String(this.decoded);
    data.drawn = String(this.drawn);
    if (this.latencies.length) {
      data.latencyMs = this.latencies[this.latencies.length - 1].toFixed(1);
      data.latencyMedianMs = median(this.latencies).toFixed(1);
    }
    if (this.statsPending) return;
    this.statsPending = true;
    setTimeout(() => {
      this.statsPending = false;
      const skipped = this.catchupFrames ? ` (${this.catchupFrames} catch-up)` : "";
      this.framesText.textContent = `${this.decoded} frames decoded${skipped}`;
      if (this.latencies.length) {
        const last = this.latencies[this.latencies.length - 1];
        this.latencyText.textContent = `latency ${Math.round(last)} ms (median ${Math.round(median(this.latencies))} ms)`;
      }
      if (this.adec) {
        const state = this.muted ? "muted" : audioContext().state === "running" ? "playing" : "sound off";
        this.audioText.textContent = `audio ${this.audio.codec}: ${this.audioFrames} frames, ${state}`;
      }
    }, 250);
  }

  destroy() {
    this.closeDecoders();
    if (this.gain) this.gain.disconnect();
    this.el.remove();
  }
}

export class LiveWall {
  constructor(container, empty, send, siteOf) {
    this.container = container;
    this.empty = empty;
    this.send = send;
    this.siteOf = siteOf;
    this.streams = new Map();
    this.byTrack = new Map();
    this.keyframeAsked = new Map();
    this.onChange = () => {};
    // Set by the page for supervisors: record(button) starts an evidence recording of a live stream.
    this.record = null;
  }

  watching() {
    return new Set(this.streams.keys());
  }

  open(button, { alerting = false } = {}) {
    let stream = this.streams.get(button);
    if (!stream) {
      stream = new LiveStream(this, button, this.siteOf(button));
      this.streams.set(button, stream);
      this.container.prepend(stream.el);
      this.send({ type: "watch", button });
    }
    stream.el.classList.toggle("alerting", alerting || stream.el.classList.contains("alerting"));
    this.empty.hidden = this.streams.size > 0;
    this.onChange();
    return stream;
  }

  // Open a tile for an alert's button unless the alerts have already filled AUTO_OPEN_TILES.
  autoOpen(button) {
    if (!this.streams.has(button) && this.streams.size >= AUTO_OPEN_TILES) return null;
    return this.open(button, { alerting: true });
  }

  close(button) {
    const stream = this.streams.get(button);
    if (!stream) return;
    this.send({ type: "unwatch", button });
    for (const [track, owner] of this.byTrack) if (owner === stream) this.byTrack.delete(track);
    stream.destroy();
    this.streams.delete(button);
    this.empty.hidden = this.streams.size > 0;
    this.onChange();
  }

  setAlerting(button, alerting) {
    const stream = this.streams.get(button);
    if (stream) stream.el.classList.toggle("alerting", alerting);
  }

  resubscribe() {
    for (const button of this.streams.keys()) this.send({ type: "watch", button });
  }

  requestKeyframe(button) {
    const now = performance.now();
    if (now - (this.keyframeAsked.get(button) || -Infinity) < 1000) return;
    this.keyframeAsked.set(button, now);
    this.send({ type: "keyframe", button });
  }

  onStream(message) {
    const stream = this.streams.get(message.button);
    if (!stream) return;
    for (const [track, owner] of this.byTrack) if (owner === stream) this.byTrack.delete(track);
    for (const track of message.tracks) this.byTrack.set(track.track_id, stream);
    stream.onStream(message);
  }

  onInterrupted(message) {
    const stream = this.streams.get(message.button);
    if (stream) stream.interrupted(message.reason);
  }

  onPacket(buffer) {
    if (buffer.byteLength < HEADER_BYTES) return;
    const view = new DataView(buffer);
    if (view.getUint8(0) !== 2) return;
    const flags = view.getUint8(1);
    const stream = this.byTrack.get(view.getUint32(2));
    if (!stream) return;
    const timestamp = Number(view.getBigUint64(6));
    const payload = new Uint8Array(buffer, HEADER_BYTES);
    if (flags & FLAG_AUDIO) stream.audioPacket(flags, timestamp, payload);
    else stream.videoPacket(flags, timestamp, payload);
  }
}
