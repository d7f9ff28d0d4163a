"""The evidence store on disk: one directory per alert, holds, retention, export.

``EVIDENCE_DIR/<alert_id>/`` holds a recording (manifest.py says what is
in it) and, while a legal hold is on it, ``hold.json`` (who placed it,
when, why). A held recording is never deleted. ``sweep`` deletes finished
recordings past ``evidence_retention_days`` and, while the disk is fuller
than ``evidence_disk_high_water``, the oldest finished unheld ones; it
returns what it deleted and why so the caller can log and audit it.

Used by the relay (writer, sweep, the web room's playback) and by
``pinkrelay evidence`` alike; it holds no state besides the directory.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import MANIFEST, PUBLIC_KEY, SIGNATURE, Manifest, Verdict, load_public_key, signature_of, verify

HOLD = "hold.json"
PLAYBACK = "playback.mp4"
_ALERT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class EvidenceError(ValueError):
    """A request about a recording that cannot be met; the message says why and what to do."""


@dataclass(frozen=True)
class Deleted:
    alert_id: str
    reason: str
    bytes: int


def check_alert_id(alert_id: str) -> str:
    if not _ALERT_ID.match(alert_id) or ".." in alert_id:
        raise EvidenceError(f"{alert_id!r} is not an alert id (letters, digits, '.', '_', ':', '-')")
    return alert_id


class EvidenceStore:
    def __init__(self, root: Path, key_dir: Path) -> None:
        self.root = root
        self.key_dir = key_dir

    def directory(self, alert_id: str) -> Path:
        return self.root / check_alert_id(alert_id)

    def manifest(self, alert_id: str) -> Manifest:
        directory = self.directory(alert_id)
        try:
            return Manifest.load(directory)
        except FileNotFoundError:
            raise EvidenceError(f"no recording of alert {alert_id} in {self.root}") from None
        except ValueError as error:
            raise EvidenceError(f"the manifest of alert {alert_id} is not valid JSON ({error}); "
                                f"run 'pinkrelay evidence verify {alert_id}'") from None

    def recordings(self) -> list[Manifest]:
        """Every recording's manifest, oldest first (unreadable ones are skipped; verify names them)."""
        found = []
        if not self.root.is_dir():
            return found
        for directory in self.root.iterdir():
            if (directory / MANIFEST).is_file():
                try:
                    found.append(Manifest.load(directory))
                except ValueError:
                    continue
        return sorted(found, key=lambda manifest: manifest.data.get("started_at") or 0)

    def public_key_path(self) -> Path:
        return self.key_dir / PUBLIC_KEY

    def verify(self, target: str | Path) -> Verdict:
        path = Path(target)
        directory = path if path.is_dir() else self.directory(str(target))
        # The relay's own key when this is the relay's data directory; an export's copy only without it
        # (a key that travels with the files proves nothing unless it matches the one the relay published).
        key_path = self.public_key_path() if self.public_key_path().exists() else directory / PUBLIC_KEY
        key = load_public_key(key_path) if key_path.exists() else None
        verdict = verify(directory, key)
        verdict.key = key_path if key is not None else None
        return verdict

    # -- holds ----------------------------------------------------------------------------------

    def hold(self, alert_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory(alert_id) / HOLD).read_text())
        except FileNotFoundError:
            return None

    def place_hold(self, alert_id: str, by: str, reason: str) -> dict[str, Any]:
        self.manifest(alert_id)  # it must exist
        if not reason.strip():
            raise EvidenceError("a legal hold needs a reason (--reason 'case 2025/1234'), for the record")
        hold = {"by": by, "at": time.time_ns() // 1000, "reason": reason}
        (self.directory(alert_id) / HOLD).write_text(json.dumps(hold) + "\n")
        return hold

    def release_hold(self, alert_id: str) -> dict[str, Any]:
        hold = self.hold(alert_id)
        if hold is None:
            raise EvidenceError(f"the recording of alert {alert_id} is not on hold")
        (self.directory(alert_id) / HOLD).unlink()
        return hold

    # -- retention ------------------------------------------------------------------------------

    def sweep(self, *, retention_days: float, high_water: float, now_us: int | None = None,
              busy: frozenset[str] = frozenset()) -> list[Deleted]:
        """Delete what retention and the disk's high-water mark say must go (never held or busy ones)."""
        now_us = now_us if now_us is not None else time.time_ns() // 1000
        deleted = []
        candidates = [m for m in self.recordings()
                      if m.data["state"] != "recording" and m.data["alert_id"] not in busy
                      and self.hold(m.data["alert_id"]) is None]
        horizon = now_us - int(retention_days * 86400e6)
        for manifest in list(candidates):
            if (manifest.data.get("ended_at") or manifest.data["started_at"]) < horizon:
                deleted.append(self._delete(manifest, f"older than evidence_retention_days {retention_days:g}"))
                candidates.remove(manifest)
        while candidates and self.disk_fraction() > high_water:
            manifest = candidates.pop(0)
            deleted.append(self._delete(manifest, f"evidence disk above evidence_disk_high_water "
                                                  f"{high_water:g}: oldest unheld recording deleted"))
        return deleted

    def disk_fraction(self) -> float:
        try:
            usage = shutil.disk_usage(self.root)
        except FileNotFoundError:
            return 0.0
        return usage.used / usage.total if usage.total else 0.0

    def _delete(self, manifest: Manifest, reason: str) -> Deleted:
        directory = self.directory(manifest.data["alert_id"])
        size = sum(path.stat().st_size for path in directory.iterdir() if path.is_file())
        shutil.rmtree(directory)
        return Deleted(manifest.data["alert_id"], reason, size)

    # -- playback and export --------------------------------------------------------------------

    def playable(self, alert_id: str) -> Path:
        """One MP4 of the whole recording (cached until the manifest changes), for a browser or an export."""
        directory = self.directory(alert_id)
        manifest = self.manifest(alert_id)
        target = directory / PLAYBACK
        stamp = directory / (PLAYBACK + ".head")
        if target.exists() and stamp.exists() and stamp.read_text() == manifest.data["head"]:
            return target
        parts = _parts_of(directory, manifest)
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".mp4", delete=False) as handle:
            temporary = Path(handle.name)
        try:
            from ...media.fragments import join_parts  # PyAV: loaded only when a recording is exported

            join_parts(parts, str(temporary))
            temporary.replace(target)
        finally:
            temporary.unlink(missing_ok=True)
        stamp.write_text(manifest.data["head"])
        return target

    def export(self, alert_id: str, destination: Path) -> list[Path]:
        """Playable MP4, manifest, signature, segments, public key, SHA256SUMS and a README into ``destination``."""
        directory = self.directory(alert_id)
        manifest = self.manifest(alert_id)
        destination.mkdir(parents=True, exist_ok=True)
        written = []
        movie = destination / f"{alert_id}.mp4"
        shutil.copyfile(self.playable(alert_id), movie)
        written.append(movie)
        pieces = destination / "segments"
        pieces.mkdir(exist_ok=True)
        sums = []
        for piece in manifest.pieces:
            source = directory / piece["file"]
            if source.exists():
                shutil.copyfile(source, pieces / piece["file"])
                sums.append(f"{piece['sha256']}  segments/{piece['file']}")
        shutil.copyfile(directory / MANIFEST, destination / MANIFEST)
        written.append(destination / MANIFEST)
        key_path = self.public_key_path()
        signature = None
        if key_path.exists():
            signature = signature_of(directory, load_public_key(key_path), (directory / MANIFEST).read_bytes())
        if signature is not None:
            shutil.copyfile(signature, destination / SIGNATURE)
            written.append(destination / SIGNATURE)
        if self.public_key_path().exists():
            shutil.copyfile(self.public_key_path(), destination / PUBLIC_KEY)
            written.append(destination / PUBLIC_KEY)
        (destination / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        (destination / "README.txt").write_text(_README.format(alert_id=alert_id, movie=movie.name))
        written += [destination / "SHA256SUMS", destination / "README.txt"]
        return written


def _parts_of(directory: Path, manifest: Manifest) -> list[tuple[bytes, int]]:
    parts: dict[int, list[bytes]] = {}
    starts: dict[int, int] = {}
    for piece in manifest.pieces:
        if piece["kind"] not in ("init", "media"):
            continue  # talk-back audio (talk-NNN.ogg) has its own files, not part of the MP4
        path = directory / piece["file"]
        if not path.exists():
            continue  # a missing segment is a gap in playback; verify names it
        parts.setdefault(piece["part"], []).append(path.read_bytes())
        if piece["kind"] == "media":
            starts.setdefault(piece["part"], piece["start_us"])
    return [(b"".join(chunks), starts[part]) for part, chunks in sorted(parts.items()) if part in starts]


_README = """Recording of alert {alert_id}, exported by pinkrelay
=========================================================

{movie}            the whole recording as one MP4 (H.264 video, Opus/AAC audio), for viewing
segments/              the pieces exactly as the relay wrote them (init-P.mp4, seg-NNNNNN.m4s; talk-NNN.ogg:
                       an operator's talk-back to the button, Ogg Opus, who and when in the manifest's "talkback")
manifest.json          every piece in order: index, media times, SHA-256, chained hash
manifest.sig           the relay's Ed25519 signature of manifest.json's exact bytes
evidence_key.pub.pem   the relay's public key (compare it with the one the relay operator publishes)
SHA256SUMS             the pieces' SHA-256, as listed in the manifest

To verify with standard tools:

1. The manifest is the relay's (OpenSSL 3):
     openssl pkeyutl -verify -pubin -inkey evidence_key.pub.pem -rawin -in manifest.json -sigfile manifest.sig
   prints "Signature Verified Successfully".
2. Every piece is the one the manifest lists:
     sha256sum -c SHA256SUMS
3. The pieces form the recording: concatenating one part's init segment and its
   segments in index order gives a playable fragmented MP4, e.g.
     cat segments/init-1.mp4 segments/seg-*.m4s > part1.mp4
   (``pinkrelay evidence verify DIR`` also checks the hash chain and names any gap).

{movie} is remuxed from the pieces without re-encoding; the pieces, not this
file, are what the signature covers.
"""
