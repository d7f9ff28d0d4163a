"""``pinkrelay serve``: run the relay and its web control room until SIGINT or SIGTERM, then shut down cleanly.

SIGHUP reloads the button registry (relay/registry_reload.py). The relay's
process id is kept in ``DATA_DIR/relay.pid`` while it runs, which is how
``pinkrelay registry reload`` finds it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from functools import partial
from typing import Any

import trio

from ..config import load_config
from ..logs import setup_logging
from ..ops.sdnotify import SystemdNotifier
from ..relay import Relay

log = logging.getLogger("pinkrelay.relay")
#: The running relay's process id, in its data directory.
PID_FILE = "relay.pid"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the relay daemon and its web control room")
    add_relay_options(parser)
    parser.add_argument("--web-listen", metavar="HOST:PORT",
                        help="web control room (default 127.0.0.1:7480)")
    parser.add_argument("--web-cert", metavar="FILE",
                        help="PEM certificate: serve the control room over HTTPS (needed for other workstations)")
    parser.add_argument("--web-key", metavar="FILE", help="PEM private key of --web-cert")
    parser.add_argument("--no-web", action="store_true", help="do not serve the web control room")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="Prometheus /metrics, /healthz and /readyz (default 127.0.0.1:9480)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve metrics and health checks")
    parser.set_defaults(handler=run)


def add_relay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--registry", metavar="FILE", help="button registry (CSV or TOML)")
    parser.add_argument("--data-dir", metavar="DIR", help="where the relay keeps its data (default ./var)")
    parser.add_argument("--buttons-listen", metavar="HOST:PORT", help="button listener (default 127.0.0.1:7400)")
    parser.add_argument("--consoles-listen", metavar="HOST:PORT", help="console listener (default 127.0.0.1:7401)")
    parser.add_argument("--log-format", choices=("text", "json"), help="log line format (default text)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def config_from_args(args: argparse.Namespace) -> Any:
    return load_config(
        args.config,
        overrides={
            "registry": args.registry,
            "data_dir": args.data_dir,
            "buttons_listen": args.buttons_listen,
            "consoles_listen": args.consoles_listen,
            "web_listen": getattr(args, "web_listen", None),
            "metrics_listen": getattr(args, "metrics_listen", None),
            "log_format": args.log_format,
            "log_level": args.log_level,
        },
    )


async def serve_until_signalled(relay: Relay, *, web: bool = False, web_cert: str | None = None,
                                web_key: str | None = None, metrics: bool = False) -> None:
    """Run ``relay`` (with ``web`` its control room, with ``metrics`` its metrics) until SIGINT/SIGTERM.

    Under systemd (``Type=notify``) it says READY=1 once everything listens,
    keeps the watchdog fed from the event loop, and says STOPPING=1 first thing on a signal.
    """
    systemd = SystemdNotifier()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            if web:
                from ..web import serve_web

                room = await nursery.start(partial(serve_web, relay, certfile=web_cert, keyfile=web_key))
                log.info("web control room: %s (sign in with an account from 'pinkrelay operators add')",
                         room.url)
            if metrics:
                from ..ops import serve_metrics

                ops = await nursery.start(serve_metrics, relay)
                log.info("metrics and health checks: %s/metrics, /healthz, /readyz", ops.url)
            systemd.notify("READY=1", f"STATUS=buttons on {relay.buttons_address}, consoles on "
                                      f"{relay.consoles_address}")
            await nursery.start(systemd.keep_alive)
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    relay.reload_certificates()
                    nursery.start_soon(partial(relay.reload_registry, requested_by="SIGHUP"))
                    continue
                systemd.notify("STOPPING=1", f"STATUS=stopping ({signal.Signals(signum).name})")
                await relay.shutdown(f"relay shutting down ({signal.Signals(signum).name})")
                nursery.cancel_scope.cancel()
                break
    systemd.close()


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    setup_logging(config.log_format, config.log_level)
    relay = Relay(config)
    # trio's signal receiver puts back the handlers it found when it closes; with
    # "ignore" found there, a second SIGINT/SIGTERM during the final teardown
    # cannot turn the clean exit into a kill. While the relay runs, the receiver
    # handles them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pid_file = config.data_dir / PID_FILE
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        trio.run(partial(serve_until_signalled, relay, web=not args.no_web, web_cert=args.web_cert,
                         web_key=args.web_key, metrics=not args.no_metrics))
    finally:
        if read_pid(pid_file) == os.getpid():
            pid_file.unlink(missing_ok=True)
    return 0


def read_pid(path: Any) -> int | None:
    """The process id in a relay's pid file, or None if there is none or it is not a number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
