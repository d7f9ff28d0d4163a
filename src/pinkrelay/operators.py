"""Operator accounts: who may watch and act in the control room, stored without their secrets.

``pinkrelay operators add NAME --role operator|supervisor|investigator`` makes a random
secret, prints it once, and stores only values derived from it with scrypt
(memory-hard, so a stolen file resists guessing) in the SCRAM manner:

    salted     = scrypt(secret, salt, n, r, p)
    client_key = HMAC-SHA256(salted, "pinkrelay client key")
    stored_key = SHA-256(client_key)              <- the only thing stored

A console proves it knows the secret without sending it: its proof is
``client_key XOR HMAC(stored_key, context)`` over the relay's nonce
(see protocol/auth.py). The relay recomputes ``client_key`` from the proof
and checks its hash, so even the stored file does not let anyone sign in.

The file (``DATA_DIR/operators.json``) is replaced atomically on every
change; a running relay rereads it within a second, so disabling an account
refuses it at once, on open connections too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .alerts.routing import DEFAULT_ROOM, check_room
from .errors import ConfigError
from .protocol.auth import scram_keys

#: investigator: searches and views recordings (relay/evidence/, web/incident.py), never acts on live alerts.
ROLES = ("operator", "supervisor", "investigator")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    name: str
    role: str
    disabled: bool
    salt: str
    n: int
    r: int
    p: int
    stored_key: str
    created_at: int
    #: The control room this operator works in (alert routing: pinkrelay/alerts/routing.py).
    room: str = DEFAULT_ROOM

    @property
    def kdf(self) -> str:
        return f"scrypt:{self.n}:{self.r}:{self.p}"


class OperatorStore:
    """The operators file: read, add, disable, and notice changes made by others."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._operators: dict[str, Operator] = {}

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> OperatorStore:
        return cls(Path(data_dir) / "operators.json")

    def load(self) -> dict[str, Operator]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._operators = None, {}
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            operators = {name: Operator(name=name, **fields) for name, fields in data["operators"].items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"operators file {self.path} is unreadable or damaged: {error}") from None
        self._stamp = (stat.st_mtime_ns, stat.st_ino)
        self._operators = operators
        return dict(operators)

    def changed(self) -> bool:
        """True when the file differs from what ``load`` last read."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._stamp is not None
        return (stat.st_mtime_ns, stat.st_ino) != self._stamp

    def _save(self, operators: dict[str, Operator]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"operators": {name: _fields(op) for name, op in sorted(operators.items())}}
        handle = tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, prefix=".operators-", suffix=".json", delete=False, encoding="utf-8"
        )
        with handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o600)
        os.replace(handle.name, self.path)
        self.load()

    def add(self, name: str, role: str = "operator", *, secret: str | None = None, room: str = DEFAULT_ROOM) -> str:
        """Create an account; returns its secret (shown once, never stored)."""
        check_room(room)
        if not _NAME.match(name):
            raise ConfigError(
                f"operator name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'"
            )
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
        operators = self.load()
        if name in operators:
            raise ConfigError(f"operator {name!r} already exists; disable it or pick another name")
        secret = secret or secrets.token_urlsafe(18)
        salt = secrets.token_bytes(16)
        _, stored_key = scram_keys(secret.encode(), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        operators[name] = Operator(
            name=name,
            role=role,
            disabled=False,
            salt=salt.hex(),
            n=SCRYPT_N,
            r=SCRYPT_R,
            p=SCRYPT_P,
            stored_key=stored_key.hex(),
            created_at=int(time.time()),
            room=room,
        )
        self._save(operators)
        return secret

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        operators = self.load()
        if name not in operators:
            raise ConfigError(f"no operator {name!r} in {self.path}")
        operators[name] = replace(operators[name], disabled=disabled)
        self._save(operators)

    def get(self, name: str) -> Operator | None:
        return self._operators.get(name)


def _fields(operator: Operator) -> dict[str, object]:
    fields = asdict(operator)
    del fields["name"]
    return fields
