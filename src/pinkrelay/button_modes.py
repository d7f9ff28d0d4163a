"""Button modes: ``live`` (the default) or ``test``, for maintenance. A press in test mode pages nobody.

A technician testing a button on site must not send police to it, and
must not train the control room to ignore its alarm. A supervisor puts the
button in test mode (web room, or ``pinkrelay button-mode test ID``); its
presses are then journalled as tests (relay/test_presses.py) and shown to
nobody, until it is set ``live`` again.

The modes live in ``DATA_DIR/button-modes.json``, replaced atomically on
every change under a lock (the web room and the command may both write),
with a revision that grows by one each time. A running relay rereads the
file within a second and writes the revision it applied to
``DATA_DIR/button-modes.applied``, so the command can wait until the relay
really takes the change before it says OK. Each button set once keeps
its last change (mode, by whom, when, why); a button not in the file is live.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

MODES = ("live", "test")
FILE_NAME = "button-modes.json"
APPLIED_NAME = "button-modes.applied"
MAX_NOTE_CHARS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChange:
    """A button's mode, who set it, when and why."""

    mode: str
    set_by: str
    set_at: int
    note: str = ""


class ButtonModes:
    """The buttons in test mode, as last read from the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.changes: dict[str, ModeChange] = {}
        self.revision = 0
        self._stamp: tuple[int, int, int] | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ButtonModes:
        modes = cls(Path(data_dir) / FILE_NAME)
        modes.load()
        return modes

    def in_test(self, button_id: str) -> bool:
        change = self.changes.get(button_id)
        return change is not None and change.mode == "test"

    @property
    def testing(self) -> dict[str, ModeChange]:
        """The buttons in test mode now."""
        return {button: change for button, change in self.changes.items() if change.mode == "test"}

    def _read(self) -> tuple[int, dict[str, ModeChange]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0, {}
        except OSError as error:
            raise ConfigError(f"button modes {self.path}: {error.strerror or error}") from None
        try:
            data = json.loads(text)
            revision = int(data.get("revision", 0))
            changes = {str(button): ModeChange(**entry) for button, entry in data.get("buttons", {}).items()}
            if any(change.mode not in MODES for change in changes.values()):
                raise ValueError(f"a mode is not one of {', '.join(MODES)}")
        except (ValueError, TypeError, AttributeError) as error:
            raise ConfigError(f"button modes {self.path} is damaged ({error}); set each button's mode again "
                              "with pinkrelay button-mode, or delete the file to make every button live") from None
        return revision, changes

    def load(self) -> None:
        self.revision, self.changes = self._read()
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_ino, stat.st_size)

    def changed(self) -> bool:
        return self._stat() != self._stamp

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def set(self, button_id: str, mode: str, *, set_by: str, set_at: int, note: str = "") -> int:
        """Write one button's mode (read-modify-write under the lock); returns the new revision."""
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if len(note) > MAX_NOTE_CHARS or any(ord(ch) < 32 for ch in note):
            raise ConfigError(f"a mode's note is one line of at most {MAX_NOTE_CHARS} characters")
        with self._locked():
            revision, changes = self._read()
            changes[button_id] = ModeChange(mode=mode, set_by=set_by, set_at=set_at, note=note)
            revision += 1
            self._write(revision, changes)
        self.load()
        return revision

    def _write(self, revision: int, changes: dict[str, ModeChange]) -> None:
        body: dict[str, Any] = {"revision": revision,
                                "buttons": {button: asdict(entry) for button, entry in sorted(changes.items())}}
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False,
                                         encoding="utf-8") as handle:
            json.dump(body, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, self.path)

    def applied_path(self) -> Path:
        return self.path.with_name(APPLIED_NAME)

    def mark_applied(self) -> None:
        """The relay took this revision (the command waits for it)."""
        self.applied_path().write_text(f"{self.revision}\n", encoding="utf-8")

    def applied_revision(self) -> int:
        try:
            return int(self.applied_path().read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            return -1  # not confirmed (yet): the command keeps waiting and says so
