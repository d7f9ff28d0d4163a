"""``pinkrelay evidence list|show|verify|export|hold|release``: the relay's incident recordings.

    pinkrelay evidence list    [--data-dir DIR] [--json]
    pinkrelay evidence show    ALERT_ID [--json]
    pinkrelay evidence verify  ALERT_ID|DIR
    pinkrelay evidence export  ALERT_ID --to DIR [--operator NAME]
    pinkrelay evidence hold    ALERT_ID --reason TEXT [--operator NAME]
    pinkrelay evidence release ALERT_ID [--operator NAME]

Works on the evidence directory (``evidence_dir``, default DATA_DIR/evidence)
directly, also while the relay runs. ``verify`` exits 1 and names each piece
that fails (altered, missing, reordered, a forged manifest) and lists the
gaps the relay stated. ``export``, ``hold`` and ``release`` are written to the
journal's audit table first: a journal that cannot take the entry refuses
the action. ``--operator`` defaults to the login name.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import PinkRelayError
from ..relay.evidence.store import EvidenceError, EvidenceStore
from .common import add_location_options, data_dir_of, utc_clock


class EvidenceCommandError(PinkRelayError):
    """A problem the user can fix: printed on one line, exit status 2."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("evidence", help="incident recordings: list, show, verify, export, hold, release",
                                   description="The relay's incident recordings (pre-roll to post-roll) and their "
                                   "integrity.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="every recording, oldest first")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one recording: parts, segments, gaps, hold")
    show.add_argument("alert_id", metavar="ALERT_ID")
    show.add_argument("--json", action="store_true", help="the manifest as JSON")
    check = actions.add_parser("verify", help="check hashes, chain and signature; names what fails")
    check.add_argument("alert_id", metavar="ALERT_ID|DIR")
    export = actions.add_parser("export", help="one playable MP4, manifest, key and README into a directory")
    export.add_argument("alert_id", metavar="ALERT_ID")
    export.add_argument("--to", required=True, metavar="DIR", help="where to write (created if needed)")
    hold = actions.add_parser("hold", help="place a legal hold: the recording is never deleted")
    hold.add_argument("alert_id", metavar="ALERT_ID")
    hold.add_argument("--reason", required=True, help="why (a case number), for the record")
    release = actions.add_parser("release", help="lift a legal hold")
    release.add_argument("alert_id", metavar="ALERT_ID")
    for action in (export, hold, release):
        action.add_argument("--operator", default=None, help="who does it, for the audit (default: login name)")
    add_location_options(parser, (listing, show, check, export, hold, release))
    parser.set_defaults(handler=run)


def store_of(args: argparse.Namespace) -> EvidenceStore:
    data_dir = data_dir_of(args)
    root = data_dir / "evidence"
    if getattr(args, "config", None):
        from ..config import load_config

        configured = load_config(args.config).evidence_dir
        root = configured if configured is not None else root
    return EvidenceStore(root, data_dir)


def audit(data_dir: Path, operator: str, action: str, subject: str, detail: str) -> None:
    """Write an audit entry to the relay's journal, as the relay does; refuse when it cannot be written."""
    path = data_dir / "journal.sqlite3"
    if not path.is_file():
        raise EvidenceCommandError(f"no journal at {path} to audit '{action}' in; pass the relay's --data-dir")
    try:
        conn = sqlite3.connect(path, timeout=5.0)
        with conn:
            conn.execute("INSERT INTO audit (at, operator, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                         (time.time_ns() // 1000, operator, action, subject, detail))
        conn.close()
    except sqlite3.Error as error:
        raise EvidenceCommandError(f"cannot write the audit entry to {path} ({error}); nothing was done") from None


def run(args: argparse.Namespace) -> int:
    store = store_of(args)
    try:
        return _ACTIONS[args.action](args, store)
    except EvidenceError as error:
        raise EvidenceCommandError(str(error)) from None


def _operator(args: argparse.Namespace) -> str:
    return args.operator or getpass.getuser()


def _list(args: argparse.Namespace, store: EvidenceStore) -> int:
    for manifest in store.recordings():
        data = manifest.data
        hold = store.hold(data["alert_id"])
        seconds = (manifest.end_us() - (manifest.segments[0]["start_us"] if manifest.segments else 0)) / 1e6
        if args.json:
            print(json.dumps({"alert_id": data["alert_id"], "button": data["button"], "state": data["state"],
                              "started_at": data["started_at"], "seconds": seconds, "segments": len(manifest.segments),
                              "gaps": len(data["gaps"]), "hold": hold}))
        else:
            print(f"{data['alert_id']}  {data['button']:<14} {utc_clock(data['started_at'])}  {data['state']:<9} "
                  f"{seconds:7.1f} s  {len(manifest.segments):4d} segments"
                  + (f"  {len(data['gaps'])} gap(s)" if data["gaps"] else "") + ("  HELD" if hold else ""))
    return 0


def _show(args: argparse.Namespace, store: EvidenceStore) -> int:
    manifest = store.manifest(args.alert_id)
    data = manifest.data
    if args.json:
        print(json.dumps(data | {"hold": store.hold(args.alert_id)}, indent=1))
        return 0
    print(f"alert {data['alert_id']} from button {data['button']} ({data['reason']}), relay {data['relay']}")
    print(f"  state {data['state']}" + (f": {data['stop_reason']}" if data["stop_reason"] else ""))
    print(f"  started {utc_clock(data['started_at'])}"
          + (f", ended {utc_clock(data['ended_at'])}" if data.get("ended_at") else ""))
    if data.get("press_us") and data.get("origin_us"):
        print(f"  pre-roll: first frame {(data['press_us'] - data['origin_us']) / 1e6:.1f} s before the press")
    for part in data["parts"]:
        print(f"  part {part['part']}: {part['reason']}, " + ", ".join(f"{t['kind']} {t['codec']}" for t in part["tracks"]))
    for piece in manifest.pieces:
        print(f"  {piece['index']:5d} {piece['file']:<18} {piece['start_us'] / 1e6:8.1f}-{piece['end_us'] / 1e6:<8.1f} "
              f"{piece['bytes']:9d} B  {piece['sha256'][:16]}")
    for gap in data["gaps"]:
        print(f"  gap after {gap['after']}: {gap['from_us'] / 1e6:.1f}-{gap['to_us'] / 1e6:.1f} s ({gap['reason']})")
    hold = store.hold(args.alert_id)
    if hold:
        print(f"  LEGAL HOLD by {hold['by']} at {utc_clock(hold['at'])}: {hold['reason']}")
    return 0


def _verify(args: argparse.Namespace, store: EvidenceStore) -> int:
    verdict = store.verify(args.alert_id)
    for gap in verdict.gaps:
        print(f"  stated {gap}")
    if verdict.ok:
        print(f"OK: {verdict.segments} segments, {verdict.seconds:.1f} s, chain intact, signature verified "
              f"with {verdict.key} ({verdict.directory})")
        return 0
    for problem in verdict.problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1


def _export(args: argparse.Namespace, store: EvidenceStore) -> int:
    store.manifest(args.alert_id)
    destination = Path(args.to)
    audit(store.key_dir, _operator(args), "evidence-export", args.alert_id, f"to {destination.resolve()}")
    written = store.export(args.alert_id, destination)
    print(f"exported alert {args.alert_id} to {destination}: " + ", ".join(path.name for path in written))
    return 0


def _hold(args: argparse.Namespace, store: EvidenceStore) -> int:
    store.manifest(args.alert_id)
    audit(store.key_dir, _operator(args), "evidence-hold", args.alert_id, args.reason)
    store.place_hold(args.alert_id, _operator(args), args.reason)
    print(f"legal hold placed on the recording of alert {args.alert_id}: it is never deleted until released")
    return 0


def _release(args: argparse.Namespace, store: EvidenceStore) -> int:
    if store.hold(args.alert_id) is None:
        raise EvidenceCommandError(f"the recording of alert {args.alert_id} is not on hold")
    audit(store.key_dir, _operator(args), "evidence-release", args.alert_id, "")
    store.release_hold(args.alert_id)
    print(f"legal hold on alert {args.alert_id} released: retention applies again")
    return 0


_ACTIONS = {"list": _list, "show": _show, "verify": _verify, "export": _export, "hold": _hold, "release": _release}
