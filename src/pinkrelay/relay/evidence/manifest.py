"""The manifest of a recording: every piece's SHA-256, chained, and the relay's Ed25519 signature.

A recording directory holds ``init-P.mp4`` (one per part: a relay restart
or a new stream description starts a part), ``seg-NNNNNN.m4s`` (fragments,
about ``evidence_segment`` seconds each), ``manifest.json`` and
``manifest.sig``. The manifest lists every piece in order with its index,
kind, file, size, media times (µs on the recording's time line, 0 = its
first frame), SHA-256 and ``chain``:

    chain = SHA-256 of "PREV:INDEX:KIND:FILE:SHA256:START_US:END_US"

where PREV is the previous piece's chain (for the first piece, the SHA-256 of
"pinkrelay-evidence:ALERT_ID"). Editing, removing or reordering a piece, or
an entry, breaks the chain from there on; ``manifest.sig`` is the raw
Ed25519 signature of ``manifest.json``'s exact bytes, so a manifest rebuilt
to match altered pieces does not verify without the relay's private key.
``openssl pkeyutl -verify -pubin -inkey evidence_key.pub.pem -rawin -in
manifest.json -sigfile manifest.sig`` checks it with standard tools.

Gaps the relay knows of (a restart mid-incident, a button that dropped out)
are listed in ``gaps``; verification reports them without failing. This
module does no I/O beyond reading and writing one recording directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "pinkrelay-evidence/1"
#: Media segments follow each other end to start; a hole wider than this must be stated in ``gaps``.
UNSTATED_GAP_US = 1000
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
NEXT_SIGNATURE = "manifest.sig.next"


def genesis(alert_id: str) -> str:
    return hashlib.sha256(f"pinkrelay-evidence:{alert_id}".encode()).hexdigest()


def chain_of(prev: str, entry: dict[str, Any]) -> str:
    text = (f"{prev}:{entry['index']}:{entry['kind']}:{entry['file']}:{entry['sha256']}:"
            f"{entry['start_us']}:{entry['end_us']}")
    return hashlib.sha256(text.encode()).hexdigest()


def segment_name(index: int) -> str:
    return f"seg-{index:06d}.m4s"


def init_name(part: int) -> str:
    return f"init-{part}.mp4"


class Manifest:
    """A recording's manifest in memory; ``add_piece`` chains a new file in, ``save`` signs and writes it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def new(cls, *, alert_id: str, button: str, relay: str, started_at: int, reason: str) -> Manifest:
        return cls({
            "format": FORMAT,
            "alert_id": alert_id,
            "button": button,
            "relay": relay,
            "reason": reason,
            "state": "recording",
            "stop_reason": "",
            "started_at": started_at,
            "ended_at": None,
            "press_us": None,
            "origin_us": None,
            "parts": [],
            "pieces": [],
            "gaps": [],
            "head": genesis(alert_id),
        })

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        return cls(json.loads((directory / MANIFEST).read_bytes()))

    @property
    def pieces(self) -> list[dict[str, Any]]:
        return self.data["pieces"]

    @property
    def segments(self) -> list[dict[str, Any]]:
        return [piece for piece in self.pieces if piece["kind"] == "media"]

    def end_us(self) -> int:
        segments = self.segments
        return segments[-1]["end_us"] if segments else 0

    def add_piece(self, kind: str, file: str, payload: bytes, start_us: int, end_us: int, part: int) -> dict[str, Any]:
        entry = {
            "index": len(self.pieces) + 1,
            "kind": kind,
            "part": part,
            "file": file,
            "bytes": len(payload),
            "start_us": start_us,
            "end_us": end_us,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "prev": self.data["head"],
        }
        entry["chain"] = chain_of(entry["prev"], entry)
        self.pieces.append(entry)
        self.data["head"] = entry["chain"]
        return entry

    def save(self, directory: Path, key: Ed25519PrivateKey | None) -> None:
        """Write manifest.json and its signature so that a crash at any point leaves a pair that verifies.

        The new signature is written first as ``manifest.sig.next``; then the
        manifest is replaced, then the signature. Between the two renames
        ``manifest.sig.next`` is the one that matches (verify tries both).
        """
        body = json.dumps(self.data, indent=1, sort_keys=True).encode() + b"\n"
        if key is None:
            _replace(directory / MANIFEST, body)
            return
        _replace(directory / NEXT_SIGNATURE, key.sign(body))
        _replace(directory / MANIFEST, body)
        os.replace(directory / NEXT_SIGNATURE, directory / SIGNATURE)


def _replace(path: Path, payload: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# -- keys ---------------------------------------------------------------------------------------

PRIVATE_KEY = "evidence_key.pem"
PUBLIC_KEY = "evidence_key.pub.pem"


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    """The relay's signing key (DATA_DIR/evidence_key.pem, mode 0600), made on first use with its public half."""
    path = data_dir / PRIVATE_KEY
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key; move it away and a new one is made")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    public = data_dir / PUBLIC_KEY
    if not public.exists():
        public.write_bytes(public_pem(key.public_key()))
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


# -- verification -------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What ``verify`` found: ``problems`` fail it, ``gaps`` (known interruptions) do not."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    segments: int = 0
    seconds: float = 0.0
    signed: bool = False
    #: The public key file the signature was checked with (set by EvidenceStore.verify).
    key: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def signature_of(directory: Path, public_key: Ed25519PublicKey, body: bytes) -> Path | None:
    """The signature file that verifies ``body``: manifest.sig, or manifest.sig.next after a crash between renames."""
    for name in (SIGNATURE, NEXT_SIGNATURE):
        try:
            public_key.verify((directory / name).read_bytes(), body)
            return directory / name
        except (FileNotFoundError, InvalidSignature):
            continue
    return None


def _span(entry: dict[str, Any]) -> str:
    return f"{entry['start_us'] / 1e6:.1f}-{entry['end_us'] / 1e6:.1f} s"


def verify(directory: Path, public_key: Ed25519PublicKey | None) -> Verdict:
    """Check a recording directory piece by piece; every problem names the piece or entry it is in."""
    verdict = Verdict(directory)
    try:
        body = (directory / MANIFEST).read_bytes()
        data = json.loads(body)
    except FileNotFoundError:
        verdict.problems.append(f"{directory}: no {MANIFEST}; this is not a recording directory")
        return verdict
    except ValueError as error:
        verdict.problems.append(f"{MANIFEST} is not valid JSON ({error}): it was damaged or edited")
        return verdict
    if public_key is None:
        verdict.problems.append("no public key to check the signature with (evidence_key.pub.pem)")
    elif not (directory / SIGNATURE).exists():
        verdict.problems.append(f"{SIGNATURE} is missing: the manifest cannot be shown to come from the relay")
    else:
        verdict.signed = signature_of(directory, public_key, body) is not None
        if not verdict.signed:
            verdict.problems.append(f"{SIGNATURE} does not verify {MANIFEST}: the manifest was edited or forged")
    pieces = data.get("pieces", [])
    # An export (store.py) keeps the pieces in segments/ beside the manifest.
    files = directory / "segments" if (directory / "segments").is_dir() else directory
    by_hash = {piece.get("sha256"): piece for piece in pieces}
    prev = genesis(str(data.get("alert_id", "")))
    for position, entry in enumerate(pieces, start=1):
        label = f"piece {entry.get('index')} ({entry.get('file')})"
        if entry.get("index") != position:
            verdict.problems.append(f"manifest entry {position} has index {entry.get('index')}: entries were "
                                    "removed or reordered")
        try:
            if entry["prev"] != prev or chain_of(prev, entry) != entry["chain"]:
                verdict.problems.append(f"{label}: its manifest entry does not chain to the one before; the "
                                        "manifest was edited from here on")
        except KeyError as missing:
            verdict.problems.append(f"{label}: manifest entry lacks {missing}")
            continue
        prev = entry["chain"]
        path = files / str(entry["file"])
        if entry["kind"] == "media":
            verdict.segments += 1
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            verdict.problems.append(f"segment {entry['index']} ({entry['file']}, {_span(entry)}) is missing: "
                                    f"the recording has a gap from {entry['start_us'] / 1e6:.1f} s to "
                                    f"{entry['end_us'] / 1e6:.1f} s")
            continue
        digest = hashlib.sha256(payload).hexdigest()
        if digest != entry["sha256"]:
            other = by_hash.get(digest)
            if other is not None:
                verdict.problems.append(f"segment {entry['index']} ({entry['file']}) holds the bytes of segment "
                                        f"{other['index']} ({other['file']}): segments were reordered")
            else:
                verdict.problems.append(f"segment {entry['index']} ({entry['file']}, {_span(entry)}) does not "
                                        f"match its SHA-256: it was altered")
    if pieces and data.get("head") != prev:
        verdict.problems.append("the manifest's head is not the last entry's chain: entries were cut off the end")
    stated = {gap.get("after") for gap in data.get("gaps", [])}
    segments = [piece for piece in pieces if piece.get("kind") == "media"]
    for before, after in zip(segments, segments[1:]):
        if after.get("start_us", 0) > before.get("end_us", 0) + UNSTATED_GAP_US and before.get("index") not in stated:
            verdict.problems.append(f"segments {before.get('index')} and {after.get('index')} leave "
                                    f"{(after['start_us'] - before['end_us']) / 1e6:.1f} s out and the manifest "
                                    "states no gap there: media is missing")
    listed = {str(piece.get("file")) for piece in pieces}
    for path in sorted(files.glob("seg-*.m4s")) + sorted(files.glob("init-*.mp4")):
        if path.name not in listed:
            verdict.problems.append(f"{path.name} is in the directory but not in the manifest")
    for gap in data.get("gaps", []):
        verdict.gaps.append(f"gap of {(gap['to_us'] - gap['from_us']) / 1e6:.1f} s after segment "
                            f"{gap['after']} ({gap['from_us'] / 1e6:.1f} s to {gap['to_us'] / 1e6:.1f} s): "
                            f"{gap['reason']}")
    if segments:
        verdict.seconds = (segments[-1]["end_us"] - segments[0]["start_us"]) / 1e6
    return verdict
