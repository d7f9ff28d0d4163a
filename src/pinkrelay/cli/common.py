"""What the client-side subcommands share: option parsing, output, secrets, running trio.

``button``, ``simulate``, ``console`` and ``demo`` all print either
human-readable lines or one JSON object per line (``--json``), read a secret
or token from a file, stop cleanly on SIGINT/SIGTERM or after ``--duration``,
and turn failures a user can fix into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from ..config import Address
from ..errors import ConfigError, PinkRelayError
from ..protocol import Goodbye
from ..tls import ClientTls, client_tls

DEFAULT_BUTTONS_PORT = 7400
DEFAULT_CONSOLES_PORT = 7401


class CommandError(PinkRelayError):
    """A problem the user can fix; the command prints it on one line and exits 2."""


def wall_us() -> int:
    """Wall-clock time in µs since the UNIX epoch (the protocol's timestamps)."""
    return time.time_ns() // 1000


# -- options ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoSpec:
    width: int
    height: int
    fps: float

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps:g}"


def video_spec(text: str) -> VideoSpec:
    """argparse type for ``WxH@FPS`` (e.g. ``640x360@30``)."""
    size, sep, rate = text.partition("@")
    width, x, height = size.lower().partition("x")
    try:
        spec = VideoSpec(int(width), int(height), float(rate) if sep else 30.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not WIDTHxHEIGHT@FPS, e.g. 640x360@30"
        ) from None
    if not x:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT@FPS, e.g. 640x360@30")
    if (
        not (16 <= spec.width <= 4096 and 16 <= spec.height <= 4096)
        or spec.width % 2
        or spec.height % 2
    ):
        raise argparse.ArgumentTypeError(
            f"video size {spec.width}x{spec.height} must be even numbers between 16 and 4096"
        )
    if not 1 <= spec.fps <= 120 or math.isnan(spec.fps):
        raise argparse.ArgumentTypeError(f"frame rate {rate} must be between 1 and 120 fps")
    return spec


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} must be zero or a positive number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def bitrate(text: str) -> int:
    """argparse type for bits per second; ``800k`` and ``1.5M`` are accepted."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a bit rate such as 800000 or 800k"
        ) from None
    if not 16_000 <= value <= 50_000_000:
        raise argparse.ArgumentTypeError(f"bit rate {value} b/s outside 16k..50M")
    return value


def add_relay_option(parser: argparse.ArgumentParser, port: int, what: str) -> None:
    parser.add_argument(
        "--relay",
        metavar="HOST:PORT",
        default=f"127.0.0.1:{port}",
        help=f"the relay's {what} address (default 127.0.0.1:{port}); several, comma-separated, for a cluster",
    )
    tls = parser.add_argument_group("TLS (docs/protocol.md §13)")
    tls.add_argument("--tls", action="store_true", help="connect with TLS 1.3 (implied by --ca or --pin)")
    tls.add_argument("--ca", metavar="FILE", help="the deployment's CA (ca.pem from 'pinkrelay certs init')")
    tls.add_argument("--pin", metavar="SHA256",
                     help="trust the relay certificate with this SHA-256 (openssl x509 -fingerprint -sha256)")
    tls.add_argument("--cert", metavar="FILE", help="this client's certificate (buttons, when the relay asks)")
    tls.add_argument("--key", metavar="FILE", help="the private key of --cert")


def client_tls_of(args: argparse.Namespace) -> ClientTls | None:
    """The TLS settings the --tls/--ca/--pin/--cert/--key options ask for; None: plaintext."""
    if not (args.tls or args.ca or args.pin or args.cert):
        return None
    return client_tls(ca=args.ca, pin=args.pin or "", cert=args.cert, key=args.key)


def relay_addresses(text: str) -> tuple[Address, ...]:
    """``--relay HOST:PORT[,HOST:PORT...]``: the relays of a cluster, tried in turn (operations.md §22.2)."""
    return tuple(relay_address(part.strip()) for part in text.split(",") if part.strip()) or (relay_address(text),)


def relay_address(text: str) -> Address:
    address = Address.parse(text, what="--relay")
    if address.port == 0:
        raise ConfigError(f"--relay {text!r}: port 0 is not a port a relay listens on")
    return address


def connect_failure(error: OSError) -> str:
    """Why a TCP connect failed, e.g. 'Connection refused' (trio wraps the causes)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, BaseExceptionGroup):
            cause = _leaves(cause)[0]
            continue
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__
    return str(error)


# -- secrets ---------------------------------------------------------------------


def read_text_file(path: str | Path, what: str) -> str:
    """The text of a small secret file; CommandError naming ``what`` if it is unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise CommandError(f"{what} {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise CommandError(f"{what} {path} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path} is not UTF-8 text") from None
    except OSError as error:
        raise CommandError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    if not text.strip():
        raise CommandError(f"{what} {path} is empty")
    return text


# -- output ----------------------------------------------------------------------


class Output:
    """Human lines, or one JSON object per line with ``--json``; always flushed."""

    def __init__(self, json_mode: bool, stream: TextIO | None = None, prefix: str = "") -> None:
        self.json = json_mode
        self.stream = stream or sys.stdout
        self.prefix = prefix

    def event(self, name: str, **fields: Any) -> None:
        """A machine-readable event (printed only in JSON mode)."""
        if self.json:
            self._write(json.dumps({"event": name, **fields}, separators=(", ", ": ")))

    def say(self, text: str) -> None:
        """A line for people (printed only without ``--json``)."""
        if not self.json:
            self._write(f"{self.prefix}{text}")

    def box(self, lines: Sequence[str]) -> None:
        """Lines a person must not miss (a URL, a secret), framed (printed only without ``--json``)."""
        width = max(len(line) for line in lines)
        for text in ("+" + "-" * (width + 2) + "+", *(f"| {line.ljust(width)} |" for line in lines),
                     "+" + "-" * (width + 2) + "+"):
            self.say(text)

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def utc_clock(us: int) -> str:
    """``HH:MM:SS.mmm UTC`` for a µs timestamp."""
    seconds, micros = divmod(us, 1_000_000)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{micros // 1000:03d} UTC"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# -- running ---------------------------------------------------------------------


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def run_trio(main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``trio.run`` that reports the failure a user can act on, in words, on one line.

    Exception groups are reduced to the error inside them, and an OSError's
    ``[Errno N]`` prefix is left out.
    """
    try:
        return _run_trio(main, *args)
    except OSError as error:
        if error.errno is None or not error.strerror or isinstance(error, PinkRelayError):
            raise
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
        raise CommandError(text) from None


def _run_trio(main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        return trio.run(main, *args)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        for leaf in leaves:
            if isinstance(leaf, (PinkRelayError, OSError)):
                raise leaf from None
        for leaf in leaves:
            if isinstance(leaf, KeyboardInterrupt):
                raise leaf from None
        raise


async def wait_for_stop(duration: float | None, stop: trio.Event | None = None) -> str:
    """Return after ``duration`` seconds, on SIGINT/SIGTERM, or when ``stop`` is set; says which."""
    reasons: list[str] = []
    async with trio.open_nursery() as nursery:

        def finish(reason: str) -> None:
            reasons.append(reason)
            nursery.cancel_scope.cancel()

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                async for signum in received:
                    finish(signal.Signals(signum).name)
                    return

        async def timer() -> None:
            if duration is not None:
                await trio.sleep(duration)
                finish("duration reached")

        async def event() -> None:
            if stop is not None:
                await stop.wait()
                finish("asked to stop")

        nursery.start_soon(signals)
        nursery.start_soon(timer)
        nursery.start_soon(event)
    return reasons[0] if reasons else "stopped"


async def say_goodbye(links: Sequence[Any], reason: str, grace: float = 1.0) -> None:
    """Send ``goodbye`` on every open link, give the outboxes ``grace`` seconds, close them."""
    with trio.CancelScope(shield=True):
        open_links = [link for link in links if link is not None and not link.closed_reason]
        for link in open_links:
            link.send(Goodbye(reason=reason))
        with trio.move_on_after(grace):
            while any(not link.outbox.empty and link.outbox.failure is None for link in open_links):
                await trio.sleep(0.01)
        for link in open_links:
            link.close(reason)


# -- the options every command with actions takes, before or after its action ---------------


def add_location_options(parser: argparse.ArgumentParser, actions: Sequence[argparse.ArgumentParser]) -> None:
    """``--data-dir`` and ``--config`` on a command and on each of its actions.

    ``pinkrelay operators --data-dir D add`` and ``pinkrelay operators add
    --data-dir D`` mean the same: the actions' copies default to SUPPRESS, so a
    value given before the action is not overwritten by an absent one after it.
    """
    for target, default in ((parser, None), *((action, argparse.SUPPRESS) for action in actions)):
        target.add_argument("--data-dir", metavar="DIR", default=default,
                            help="the relay's data directory (default: from --config, $PINKRELAY_DATA_DIR, ./var)")
        target.add_argument("--config", metavar="FILE", default=default,
                            help="the relay's TOML settings file (for its data_dir and registry)")


def data_dir_of(args: argparse.Namespace) -> Path:
    """The data directory a command means: ``--data-dir``, else its settings (file, environment, ./var)."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    from ..config import load_config

    return load_config(getattr(args, "config", None)).data_dir


def add_secret_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` for a command that signs in as an operator: where ``OPERATOR.secret`` is looked for."""
    parser.add_argument("--data-dir", metavar="DIR",
                        help="the relay's data directory, where OPERATOR.secret is looked for (default ./var)")
