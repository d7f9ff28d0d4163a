"""RelayConfig: every setting of the relay, from defaults, a TOML file, the environment and flags.

Later sources override earlier ones: embedded defaults < ``--config FILE`` <
``PINKRELAY_*`` environment variables < command-line flags. Every value is
checked once, here; an unknown key or ``PINKRELAY_*`` variable, a bad port,
a number of the wrong kind or an unreadable file is a ConfigError that
names the source, the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._core import HEADER_SIZE, Limits, QueueDefaults
from .alerts.routing import check_groups
from .errors import ConfigError
from .integrations.settings import SinkConfig, parse_sinks


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or systemd may narrow), at most 64."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 64))


@dataclass(frozen=True, slots=True)
class Address:
    """A host and TCP port to listen on or connect to."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port!r} outside 0..65535")

    @classmethod
    def parse(cls, text: str, *, what: str = "address") -> Address:
        """Parse ``HOST:PORT`` (``[::1]:7400`` for IPv6)."""
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{what} {text!r} is not HOST:PORT (e.g. 127.0.0.1:7400)")
        host = host.strip("[]")
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: port {port!r} is not a number") from None
        if not 0 <= number <= 65535:
            raise ConfigError(f"{what} {text!r}: port {number} outside 0..65535")
        return cls(host, number)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """The relay's settings. All have embedded defaults; see docs/operations.md."""

    buttons_listen: Address = Address("127.0.0.1", 7400)
    consoles_listen: Address = Address("127.0.0.1", 7401)
    #: The web control room (HTTP and WebSocket) on the relay's event loop.
    web_listen: Address = Address("127.0.0.1", 7480)
    #: Prometheus metrics, /healthz and /readyz (pinkrelay/ops); ``pinkrelay serve --no-metrics`` turns it off.
    metrics_listen: Address = Address("127.0.0.1", 9480)
    data_dir: Path = Path("var")
    registry: Path | None = None
    #: operator name -> token, until operator accounts exist (tokens file preferred).
    console_tokens: Mapping[str, str] = field(default_factory=dict)
    console_tokens_file: Path | None = None
    relay_name: str = "pinkrelay"
    #: TLS 1.3 on the button and console listeners (PEM files, e.g. from 'pinkrelay certs init').
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: With this CA, every button must present a certificate it signed, whose CN is the button id.
    tls_client_ca: Path | None = None
    #: Listener addresses (HOST:PORT, as in buttons_listen/consoles_listen) allowed to run without TLS
    #: although they are not loopback: naming an address here as well states the choice twice.
    allow_plaintext: tuple[str, ...] = ()
    heartbeat_interval: float = 10.0
    supervision_window: float = 20.0
    handshake_timeout: float = 10.0
    chunk_size: int = Limits.CHUNK_SIZE
    max_frame_bytes: int = Limits.MAX_FRAME_BYTES
    max_control_bytes: int = Limits.MAX_CONTROL_BYTES
    max_message_bytes: int = Limits.MAX_MESSAGE_BYTES
    max_tracks: int = Limits.MAX_TRACKS
    max_video_queue_bytes: int = QueueDefaults.MAX_VIDEO_BYTES
    max_video_queue_age: float = QueueDefaults.MAX_VIDEO_AGE
    max_audio_queue_bytes: int = QueueDefaults.MAX_AUDIO_BYTES
    max_control_queue_bytes: int = QueueDefaults.MAX_CONTROL_BYTES
    #: A subscriber whose socket takes nothing for this long is disconnected.
    stall_timeout: float = 10.0
    #: Bytes of video kept per stream since its last keyframe, for fast join.
    gop_cache_bytes: int = 16 * 1024 * 1024
    #: Compiled data threads that read buttons and write consoles without Python (relay/data_plane.py);
    #: by default one per core this process may run on. 0: media takes the trio path (also what the
    #: pure-Python core always does).
    data_threads: int = field(default_factory=usable_cores)
    #: Audio waits up to this long for the next video frame to a console and leaves
    #: in the same write (one write per video frame instead of one per frame); 0: at once.
    audio_hold: float = 0.035
    #: Ask the button for a fresh keyframe when a console joins and the cached GOP is older.
    join_keyframe_age: float = 0.5
    #: Seconds after which an unacknowledged alert is escalated, one per level.
    escalation_levels: tuple[float, ...] = (15.0, 60.0)
    #: Who else sees an alert from each level on: 'supervisors', 'all' or 'room:NAME'
    #: (pinkrelay/alerts/routing.py). With one control room everyone sees every alert anyway.
    escalation_groups: tuple[str, ...] = ("supervisors", "all")
    #: A second press from the same button within this many seconds of an open
    #: alert is recorded as a duplicate linked to it.
    merge_window: float = 120.0
    #: Repeat presses into a button's open alert: this many a second, from a bucket of press_burst_per_button;
    #: more are refused (error 'limit') and the button is marked suspicious. 0: no limit. A first press always passes.
    press_rate_per_button: float = 1.0
    press_burst_per_button: int = 20
    #: More than mass_outage_buttons buttons of one district (or site) offline within mass_outage_window
    #: seconds raise one 'mass_outage' alert for them instead of one 'offline' alert each. 0: never group.
    mass_outage_buttons: int = 20
    mass_outage_window: float = 60.0
    #: Abuse limits (relay/limits.py). Connections that have not signed in yet, per source address and in all:
    max_unauthenticated_per_address: int = 64
    max_unauthenticated: int = 4096
    #: Handshakes a second per source address, from a bucket of handshake_burst_per_address; 0: no limit.
    handshake_rate_per_address: float = 20.0
    handshake_burst_per_address: int = 100
    #: Media from one button above this many bits a second is dropped; 0: no limit.
    max_button_bitrate: int = 20_000_000
    #: A button over max_button_bitrate (with drops) this many seconds is disconnected (error 'limit').
    media_overrun_close: float = 10.0
    #: Buttons one console may watch at once.
    max_subscriptions_per_console: int = 64
    #: The web control room: WebSockets one signed-in session may hold, request header and body sizes.
    web_max_websockets_per_session: int = 8
    web_max_header_bytes: int = 16384
    web_max_body_bytes: int = 65536
    log_format: str = "text"
    log_level: str = "info"
    #: Where every alert and lifecycle step is delivered: ``[[sinks]]`` tables
    #: (pinkrelay/integrations/settings.py, docs/operations.md "Integrations").
    sinks: tuple[SinkConfig, ...] = ()
    #: Evidence (pinkrelay/relay/evidence/): seconds of every streaming button's media kept in memory
    #: (whole GOPs) so a recording starts before the press; 0: no pre-roll.
    pre_roll: float = 20.0
    #: All pre-roll rings together stay under this many bytes; over it the longest rings lose their oldest GOP.
    preroll_budget_bytes: int = 256 * 1024 * 1024
    #: A recording goes on this long after its alert is resolved, and never past max_incident after the press.
    post_roll: float = 30.0
    max_incident: float = 7200.0
    #: Where recordings go (one directory per alert); default DATA_DIR/evidence.
    evidence_dir: Path | None = None
    #: Seconds of media per segment file (cut at the first keyframe after this much).
    evidence_segment: float = 2.0
    #: Bytes one recording may have waiting for the disk; past it the recording stops loudly, live video goes on.
    evidence_queue_bytes: int = 64 * 1024 * 1024
    #: Finished recordings older than this are deleted, unless on legal hold.
    evidence_retention_days: float = 90.0
    #: When the evidence disk is fuller than this fraction, the oldest unheld recordings are deleted.
    evidence_disk_high_water: float = 0.9
    #: Several relays as one control room (docs/operations.md §22): the servers of a NATS
    #: JetStream cluster, ``nats://HOST:PORT``. Empty: one relay with its SQLite journal, no NATS.
    cluster_nats_urls: tuple[str, ...] = ()
    #: Names the cluster's stream, subjects and KV buckets, so two control rooms can share one NATS cluster.
    cluster_namespace: str = "pinkrelay"
    #: Copies JetStream keeps of every record: 3 on a 3-node NATS cluster (1 for a single server).
    cluster_replicas: int = 3
    #: A relay that has not renewed its lease for this long is taken for dead; the others supervise its buttons.
    cluster_lease: float = 10.0
    #: The cluster's secret (the same file on every relay): a relay pulls another's media signed in as
    #: ``relay.NAME`` with a token derived from it. None: consoles see only buttons on their own relay.
    cluster_secret_file: Path | None = None

    def __post_init__(self) -> None:
        _check_number_types(self)
        positive = (
            "heartbeat_interval",
            "supervision_window",
            "handshake_timeout",
            "max_video_queue_age",
            "stall_timeout",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if not 0.1 <= self.heartbeat_interval <= 3600:
            raise ConfigError(f"heartbeat_interval {self.heartbeat_interval} s outside 0.1..3600")
        if self.supervision_window > 86400:
            raise ConfigError(f"supervision_window {self.supervision_window} s is above a day (86400)")
        for name in ("max_frame_bytes", "max_control_bytes", "max_message_bytes"):
            if getattr(self, name) < 256:
                raise ConfigError(f"{name} {getattr(self, name)} must be at least 256 bytes")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", self.relay_name):
            raise ConfigError(
                f"relay_name {self.relay_name!r}: 1-64 letters, digits, '.', '_' or '-'"
            )
        if self.supervision_window < self.heartbeat_interval:
            raise ConfigError(
                f"supervision_window {self.supervision_window} s is shorter than "
                f"heartbeat_interval {self.heartbeat_interval} s; every button would look offline"
            )
        if not 256 <= self.chunk_size <= self.max_frame_bytes:
            raise ConfigError(
                f"chunk_size {self.chunk_size} must be between 256 and max_frame_bytes "
                f"{self.max_frame_bytes}"
            )
        for name in ("max_unauthenticated_per_address", "max_unauthenticated", "handshake_burst_per_address",
                     "max_subscriptions_per_console", "web_max_websockets_per_session"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        if self.handshake_rate_per_address < 0 or self.max_button_bitrate < 0:
            raise ConfigError("handshake_rate_per_address and max_button_bitrate must be zero (no limit) or more")
        if 0 < self.max_button_bitrate < 64_000:
            raise ConfigError(f"max_button_bitrate {self.max_button_bitrate} bit/s is below one audio stream "
                              "(64000); 0 means no limit")
        if self.media_overrun_close <= 0:
            raise ConfigError(f"media_overrun_close must be a positive number of seconds, not "
                              f"{self.media_overrun_close!r}")
        for name in ("web_max_header_bytes", "web_max_body_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigError(f"{name} {getattr(self, name)} must be at least 1024 bytes")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both tls_cert and tls_key (PEM files; 'pinkrelay certs init DIR' makes them)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_client_ca checks buttons' certificates on a TLS listener: set tls_cert and tls_key too")
        if not 1 <= self.max_tracks <= 64:
            raise ConfigError(f"max_tracks {self.max_tracks} outside 1..64")
        for name in ("max_video_queue_bytes", "max_audio_queue_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} {getattr(self, name)} must be a positive number of bytes "
                    "(a console's queue bound; 0 or less would drop every frame)"
                )
        one_frame = self.max_control_bytes + HEADER_SIZE
        if self.max_control_queue_bytes < one_frame:
            raise ConfigError(
                f"max_control_queue_bytes {self.max_control_queue_bytes} cannot hold one control frame "
                f"of max_control_bytes {self.max_control_bytes} (+{HEADER_SIZE} header bytes): peers "
                f"would be disconnected for one large message; use at least {one_frame}"
            )
        if not isinstance(self.press_rate_per_button, (int, float)) or self.press_rate_per_button < 0:
            raise ConfigError(f"press_rate_per_button must be zero (no limit) or more presses a second, "
                              f"not {self.press_rate_per_button!r}")
        if not isinstance(self.press_burst_per_button, int) or self.press_burst_per_button < 1:
            raise ConfigError(f"press_burst_per_button must be at least 1, not {self.press_burst_per_button!r}")
        if not isinstance(self.mass_outage_buttons, int) or self.mass_outage_buttons < 0:
            raise ConfigError(f"mass_outage_buttons must be zero (never group) or more buttons, "
                              f"not {self.mass_outage_buttons!r}")
        if not isinstance(self.mass_outage_window, (int, float)) or self.mass_outage_window <= 0:
            raise ConfigError(f"mass_outage_window must be more than zero seconds, not {self.mass_outage_window!r}")
        if not 0 <= self.data_threads <= 64:
            raise ConfigError(f"data_threads {self.data_threads} must be between 0 (no data plane) and 64; "
                              "the number of cores is a good choice")
        if self.gop_cache_bytes < 0:
            raise ConfigError(
                f"gop_cache_bytes {self.gop_cache_bytes} must be zero or more bytes "
                "(0 turns the fast-join cache off)"
            )
        if self.join_keyframe_age < 0:
            raise ConfigError(
                f"join_keyframe_age must be zero or more seconds, not {self.join_keyframe_age!r}"
            )
        levels = tuple(self.escalation_levels)
        if (
            not 1 <= len(levels) <= 16
            or any(not isinstance(v, (int, float)) or v <= 0 for v in levels)
            or list(levels) != sorted(set(levels))
        ):
            raise ConfigError(
                f"escalation_levels {list(levels)} must be 1 to 16 positive seconds in increasing "
                "order, e.g. [15, 60]"
            )
        object.__setattr__(self, "escalation_levels", tuple(float(v) for v in levels))
        if isinstance(self.escalation_groups, str) or not 0 <= len(self.escalation_groups) <= 16:
            raise ConfigError(
                f"escalation_groups {self.escalation_groups!r} must be a list of up to 16 groups, "
                "e.g. [\"supervisors\", \"room:vwps-peshawar\"]"
            )
        object.__setattr__(self, "escalation_groups", check_groups(self.escalation_groups))
        if not isinstance(self.audio_hold, (int, float)) or not 0 <= self.audio_hold <= 0.5:
            raise ConfigError(
                f"audio_hold must be 0 to 0.5 seconds (0 sends every audio frame at once), "
                f"not {self.audio_hold!r}"
            )
        if not isinstance(self.merge_window, (int, float)) or self.merge_window < 0:
            raise ConfigError(f"merge_window must be zero or more seconds, not {self.merge_window!r}")
        for name in ("pre_roll", "post_roll"):
            if not 0 <= getattr(self, name) <= 3600:
                raise ConfigError(f"{name} must be 0 to 3600 seconds, not {getattr(self, name)!r}")
        if not 1 <= self.max_incident <= 7 * 86400:
            raise ConfigError(f"max_incident must be 1 s to 7 days (604800 s), not {self.max_incident!r}")
        if not 0.5 <= self.evidence_segment <= 60:
            raise ConfigError(f"evidence_segment must be 0.5 to 60 seconds, not {self.evidence_segment!r}")
        if self.preroll_budget_bytes < 0 or self.evidence_queue_bytes < 1024 * 1024:
            raise ConfigError("preroll_budget_bytes must be zero or more and evidence_queue_bytes at least "
                              f"1 MiB (1048576), not {self.preroll_budget_bytes} and {self.evidence_queue_bytes}")
        if self.evidence_retention_days <= 0:
            raise ConfigError(f"evidence_retention_days must be a positive number of days, not "
                              f"{self.evidence_retention_days!r}")
        if not 0.1 <= self.evidence_disk_high_water <= 1.0:
            raise ConfigError(f"evidence_disk_high_water is a fraction of the disk, 0.1 to 1.0, not "
                              f"{self.evidence_disk_high_water!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format {self.log_format!r} is not 'text' or 'json'")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level {self.log_level!r} is not debug, info, warning or error")
        _check_cluster(self)
        if self.buttons_listen == self.consoles_listen and self.buttons_listen.port != 0:
            raise ConfigError(
                f"buttons and consoles cannot share the listener {self.buttons_listen}"
            )

    @property
    def evidence_root(self) -> Path:
        """The directory recordings go to: ``evidence_dir``, else DATA_DIR/evidence."""
        return self.evidence_dir if self.evidence_dir is not None else self.data_dir / "evidence"

    def replace(self, **changes: Any) -> RelayConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(RelayConfig)}


def _default(name: str) -> Any:
    """A setting's default value, also for those made by a factory (data_threads: the cores)."""
    f = _FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


#: Settings that are a whole number (bytes, counts) and a number of seconds.
_INTEGERS = tuple(name for name in _FIELDS if type(_default(name)) is int)
_FLOATS = tuple(name for name in _FIELDS if type(_default(name)) is float)
ENV_PREFIX = "PINKRELAY_"
#: ``PINKRELAY_*`` variables that are not relay settings, and who reads them. Any
#: other ``PINKRELAY_*`` name is refused, so a misspelt setting cannot be ignored.
#: (``PINKRELAY_DATA_DIR``, also read by ``pinkrelay alerts`` and ``operators``, is a setting.)
OTHER_VARIABLES = {
    "PINKRELAY_PUREPYTHON": "selects the pure-Python core (pinkrelay._core)",
    "PINKRELAY_CONSOLE_TOKEN": "the token of 'pinkrelay console'",
    "PINKRELAY_CHROMIUM": "the browser the web control room's tests drive",
    "PINKRELAY_UPDATE_SCREENSHOT": "the web control room's tests: refresh the screenshot",
    "PINKRELAY_FUZZ_EXAMPLES": "how many streams the data plane's fuzz test tries (make fuzz)",
    "PINKRELAY_SANITIZE": "setup.py: build the compiled core with AddressSanitizer and UBSan (make sanitize)",
}


def _check_cluster(config: RelayConfig) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", config.cluster_namespace):
        raise ConfigError(f"cluster_namespace {config.cluster_namespace!r}: 1-32 lower-case letters, digits, "
                          "'_' or '-'")
    if not 1 <= config.cluster_replicas <= 5:
        raise ConfigError(f"cluster_replicas {config.cluster_replicas} outside 1..5 (JetStream's limit)")
    if not 1 <= config.cluster_lease <= 600:
        raise ConfigError(f"cluster_lease {config.cluster_lease} s outside 1..600")
    if config.cluster_nats_urls and config.sinks:
        raise ConfigError("[[sinks]] deliver from the SQLite journal's outbox, which a relay with "
                          "cluster_nats_urls does not use; run the sinks on a single relay, or remove one of them")


def _nats_urls(value: Any, source: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{source}: cluster_nats_urls must be a list of nats://HOST:PORT, not {value!r}")
    urls = tuple(item.strip() for item in items if item.strip())
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if scheme not in ("nats", "tls") or not sep:
            raise ConfigError(f"{source}: cluster_nats_urls entry {url!r} is not nats://HOST:PORT or tls://HOST:PORT")
        Address.parse(rest.rpartition("@")[2], what=f"{source}: cluster_nats_urls entry {url!r}")
    return urls


def _check_number_types(config: RelayConfig) -> None:
    """Whole numbers where bytes and counts are meant, finite numbers of seconds; no booleans.

    ``True`` is an ``int`` to Python and ``int(1000.9)`` is 1000: neither may
    pass for a setting silently.
    """
    for name in _INTEGERS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, not {value!r}")
    for name in _FLOATS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number of seconds, not {value!r}")


def _convert(name: str, value: Any, source: str) -> Any:
    """Turn a TOML, environment or flag value into the field's type."""
    default = _default(name)
    if name in ("buttons_listen", "consoles_listen", "web_listen", "metrics_listen"):
        if isinstance(value, Address):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {name} must be a string HOST:PORT, not {value!r}")
        return Address.parse(value, what=f"{source}: {name}")
    if name in ("data_dir", "registry", "console_tokens_file", "tls_cert", "tls_key", "tls_client_ca",
                "evidence_dir", "cluster_secret_file"):
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(f"{source}: {name} must be a path, not {value!r}")
        return Path(value)
    if name == "console_tokens":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
        ):
            raise ConfigError(f"{source}: console_tokens must be a table of operator = \"token\"")
        return dict(value)
    if name == "sinks":
        return parse_sinks(value, source)
    if name == "allow_plaintext":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{source}: allow_plaintext must be a list of HOST:PORT, not {value!r}")
        return tuple(str(Address.parse(item.strip(), what=f"{source}: allow_plaintext")) for item in items
                     if item.strip())
    if name == "cluster_nats_urls":
        return _nats_urls(value, source)
    if name == "escalation_groups":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{source}: escalation_groups must be a list of groups, not {value!r}")
        return tuple(item.strip() if isinstance(item, str) else item for item in items)
    if name == "escalation_levels":
        items = value.split(",") if isinstance(value, str) else value
        try:
            return tuple(float(item) for item in items)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: escalation_levels must be a list of seconds, not {value!r}") from None
    if isinstance(default, bool):
        raise ConfigError(f"{source}: {name} has no boolean form")
    if isinstance(default, (int, float)) and isinstance(value, bool):
        raise ConfigError(f"{source}: {name} must be a number, not the boolean {value!r}")
    if isinstance(default, int):
        if isinstance(value, float):
            # int(1000.9) would quietly be 1000.
            if not value.is_integer():
                raise ConfigError(f"{source}: {name} must be a whole number, not {value!r}")
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {name} must be a whole number, not {value!r}") from None
    if isinstance(default, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {name} must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{source}: {name} must be a finite number, not {value!r}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {name} must be a string, not {value!r}")
    return value


def _merge(values: dict[str, Any], updates: Mapping[str, Any], source: str) -> None:
    for key, value in updates.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, _FIELDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known settings: {', '.join(sorted(_FIELDS))}"
            raise ConfigError(f"{source}: unknown setting {key!r}; {hint}")
        values[name] = _convert(name, value, source)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    relay = data.pop("relay", None)
    if relay is not None:
        if not isinstance(relay, dict):
            raise ConfigError(f"config file {path}: [relay] must be a table")
        data = {**relay, **data}
    cluster = data.pop("cluster", None)
    if cluster is not None:
        # [cluster] nats_urls = [...] is cluster_nats_urls, and so on for each cluster_* setting.
        if not isinstance(cluster, dict):
            raise ConfigError(f"config file {path}: [cluster] must be a table")
        data = {**{f"cluster_{key.replace('-', '_')}": value for key, value in cluster.items()}, **data}
    return data


def load_config(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RelayConfig:
    """Build the config: defaults, then the file, then ``PINKRELAY_*``, then ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        _merge(values, read_toml(Path(path)), f"config file {path}")
    env = os.environ if environ is None else environ
    _merge(values, settings_from_environment(env), "environment")
    if overrides:
        _merge(values, {k: v for k, v in overrides.items() if v is not None}, "command line")
    try:
        return RelayConfig(**values)
    except ConfigError as error:
        where = f"config file {path}" if path else "settings"
        raise ConfigError(f"{where}: {error}") from None


def settings_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``PINKRELAY_<SETTING>`` variables, by setting name; refuse unknown ``PINKRELAY_*`` names.

    A misspelt setting (an S too many at the end of the supervision window's
    name) silently ignored would leave every button on the default window;
    better to stop and say so.
    """
    settings: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in OTHER_VARIABLES:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in _FIELDS:
            settings[name] = value
            continue
        close = difflib.get_close_matches(name, _FIELDS, n=1)
        hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}?)" if close else ""
        known = ", ".join(ENV_PREFIX + field.upper() for field in sorted(_FIELDS))
        raise ConfigError(
            f"environment: {key} is not a pinkrelay setting{hint}; unset or rename it. "
            f"Known settings: {known}. Other variables pinkrelay reads: {', '.join(OTHER_VARIABLES)}"
        )
    return settings
