"""``pinkrelay certs init DIR``: a deployment's private CA, the relay's certificate and one per button.

Run it again after adding buttons to the registry: it issues certificates for
the new ones under the same CA and leaves every existing file alone.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..certs import init_deployment
from ..registry import load_registry


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("certs", help="make a deployment's CA, relay and device certificates")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    init = actions.add_parser(
        "init", help="make (or complete) DIR: ca.pem/.key, relay.pem/.key, devices/ID.pem/.key",
        description="Make a private CA in DIR, the relay's certificate for each --host, and a client "
                    "certificate for every button of --registry. Existing files are kept.",
    )
    init.add_argument("directory", metavar="DIR", help="where the certificates go (created, mode 0700)")
    init.add_argument("--host", action="append", metavar="NAME_OR_IP",
                      help="a name or address the relay is reached at (repeat; default localhost and 127.0.0.1)")
    init.add_argument("--registry", metavar="FILE", help="issue a device certificate for every button in it")
    init.add_argument("--organisation", default="pinkrelay deployment", metavar="TEXT",
                      help="the O= of every certificate, e.g. the police IT unit's name")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    devices = list(load_registry(args.registry)) if args.registry else []
    issued = init_deployment(args.directory, hosts=tuple(args.host or ("localhost", "127.0.0.1")),
                             devices=devices, organisation=args.organisation)
    for path in issued.created:
        print(f"created {path}")
    print(f"{len(issued.created)} certificates created, {len(issued.kept)} already there, in {args.directory}; "
          "keep ca.key offline once the devices are issued")
    return 0
