"""What the talk-back tests share: a sine tone as a WAV file or as Opus packets, its frequency, the audit rows."""

from __future__ import annotations

import sqlite3
import wave
from pathlib import Path

import numpy as np

from pinkrelay.media import AudioEncoder, ToneSource

RATE = 48000


def write_tone(path: Path, frequency: float, seconds: float = 10.0) -> Path:
    """A mono 16-bit 48 kHz WAV file of a sine tone (Chromium's fake microphone plays it)."""
    t = np.arange(int(RATE * seconds)) / RATE
    samples = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.tobytes())
    return path


def opus_tone(seconds: float, frequency: float) -> list[bytes]:
    """Raw Opus packets (20 ms, PyAV's libopus) of a sine tone: what a browser's AudioEncoder sends."""
    encoder = AudioEncoder("opus", RATE, 1, 32000)
    tone = ToneSource(frequency=frequency)
    packets = []
    for n in range(int(seconds * 50)):
        packets += [p.data for p in encoder.encode(tone.frame(n))]
    return packets


def dominant_hz(path: Path) -> tuple[float, int]:
    """(the strongest frequency in a 48 kHz mono WAV file, its number of samples), by numpy's FFT."""
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples)), len(samples)


def audit(data_dir: Path, action: str) -> list[tuple[str, str, str]]:
    """(operator, subject, detail) of the relay's audit rows for ``action``, oldest first."""
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        return conn.execute("SELECT operator, subject, detail FROM audit WHERE action = ? ORDER BY at",
                            (action,)).fetchall()
