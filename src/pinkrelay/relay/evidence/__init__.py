"""Evidence at the relay: pre-roll rings, incident recordings, manifests, retention.

The narrow interface the media path feeds is ``offer(message, now)`` on a
tap (``PrerollRing``, a recording's live tap): the hub calls it for each
message of a stream today, a compiled data plane can call it tomorrow.
Everything else (desk.py: when to record; writer.py: the writer thread;
manifest.py: hashes and signatures; store.py: the directory, holds,
retention, export) is off the media path.
"""

from .desk import EvidenceDesk
from .manifest import Manifest, Verdict, verify
from .preroll import Preroll, PrerollRing
from .store import EvidenceError, EvidenceStore

__all__ = ["EvidenceDesk", "EvidenceError", "EvidenceStore", "Manifest", "Preroll", "PrerollRing", "Verdict",
           "verify"]
