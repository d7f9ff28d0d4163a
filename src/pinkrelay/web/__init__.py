"""The browser control room: alert board, map, live video and audio, operator actions.

Served by Hypercorn's trio worker on the relay's own event loop::

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(Relay(config).serve)
        room = await nursery.start(serve_web, relay)        # config.web_listen
        print("control room at", room.url)

``pinkrelay serve`` does this (``--web-listen HOST:PORT``, default
127.0.0.1:7480). See ``app.py`` for the routes and their security rules,
``auth.py`` for sign-in and sessions, ``live.py`` for how media reaches the
page and why WebCodecs rather than MSE.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import trio

from ..config import Address
from ..errors import ConfigError
from .app import ControlRoom
from .auth import SessionStore, SignInThrottle

log = logging.getLogger("pinkrelay.web")

__all__ = ["ControlRoom", "SessionStore", "SignInThrottle", "serve_web"]


def hypercorn_config(address: Address, certfile: str | None = None, keyfile: str | None = None, *,
                     max_header_bytes: int = 16384) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [str(address)]
    # A request line and headers larger than this get 400 and the connection closes (web_max_header_bytes).
    config.h11_max_incomplete_size = max_header_bytes
    if certfile or keyfile:
        _check_tls(certfile, keyfile)
        config.certfile, config.keyfile = str(certfile), str(keyfile)
    config.accesslog = None
    server_log = logging.getLogger("pinkrelay.web.server")
    if server_log.level == logging.NOTSET:
        server_log.setLevel(logging.WARNING)  # its "Running on ..." repeats what serve_web reports
    config.errorlog = server_log
    config.graceful_timeout = 1.0
    config.include_server_header = False
    # Pings keep idle boards connected through proxies and find dead peers.
    config.websocket_ping_interval = 20.0
    return config


async def serve_web(
    relay: Any,
    address: Address | str | None = None,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    room: ControlRoom | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the web control room for ``relay`` until cancelled.

    ``address`` defaults to ``relay.config.web_listen`` (port 0 picks a free
    one). Start it with ``nursery.start`` once the relay is serving; it
    reports the ``ControlRoom``, whose ``url`` is where it listens.

    With ``certfile`` and ``keyfile`` (PEM) it serves HTTPS and WSS. Browsers
    decode video (WebCodecs) only in a secure context: http://127.0.0.1 and
    http://localhost are one, http://10.0.0.5 is not, so a control room
    opened from other workstations needs TLS (here, or a proxy in front).
    """
    from hypercorn.trio import serve

    if address is None:
        address = relay.config.web_listen
    elif isinstance(address, str):
        address = Address.parse(address, what="web listen address")
    if relay.consoles_address is None:
        raise RuntimeError("start the relay (relay.serve) before the web control room")
    config = hypercorn_config(address, certfile, keyfile, max_header_bytes=relay.config.web_max_header_bytes)
    check_can_listen(config, address)
    room = room or ControlRoom(relay)
    async with trio.open_nursery() as nursery:
        await nursery.start(room.run)
        binds = await nursery.start(serve, room, config)
        room.url = binds[0] if binds else f"http://{address}"
        task_status.started(room)


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    if not certfile or not keyfile:
        raise ConfigError("HTTPS for the web control room needs both a certificate and its key "
                          "(--web-cert FILE --web-key FILE)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"web control room certificate {certfile} / key {keyfile}: "
                          f"{getattr(error, 'strerror', None) or error}") from None


def check_can_listen(config: Any, address: Address, *, what: str = "the web control room",
                     flag: str = "--web-listen") -> None:
    """Bind (and release) the address now, so a busy port is one clear ConfigError.

    Hypercorn would raise the OSError from deep inside its nurseries.
    """
    try:
        sockets = config.create_sockets()
    except OSError as error:
        raise ConfigError(
            f"cannot listen for {what} on {address}: {error.strerror or error} "
            f"(is another relay running? choose another address with {flag} HOST:PORT)"
        ) from None
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()
