"""pysiaalarm's SIA DC-09 receiver as a process: the alarm receiving centre of the DC-09 tests.

Usage: sia_receiver.py PORT ACCOUNT[,ACCOUNT...] [KEY] [--nak-first N]
Prints ``listening`` once it accepts connections, then one JSON line per
event pysiaalarm parsed and ACKed. With ``--nak-first N`` the first N
messages get pysiaalarm's NAK instead (as for a timestamp it rejects).
Killing the process closes every connection: the receiver is really down.
"""

from __future__ import annotations

import json
import sys
import time

from pysiaalarm import SIAAccount, SIAClient
from pysiaalarm.event import NAKEvent


def main() -> None:
    args = sys.argv[1:]
    nak_first = 0
    if "--nak-first" in args:
        at = args.index("--nak-first")
        nak_first = int(args[at + 1])
        del args[at:at + 2]
    port, accounts = int(args[0]), args[1].split(",")
    key = args[2] if len(args) > 2 else None

    def on_event(event) -> None:
        print(json.dumps({"account": event.account, "code": event.code, "ri": event.ri,
                          "type": str(event.message_type.value), "sequence": event.sequence,
                          "encrypted": bool(event.encrypted),
                          "timestamp": event.timestamp.isoformat() if event.timestamp else None}), flush=True)

    client = SIAClient("127.0.0.1", port, [SIAAccount(account, key) for account in accounts], function=on_event)
    server = client.sia_server
    parse = server.parse_and_check_event
    naks = [nak_first]

    def parse_or_nak(data: bytes):
        event = parse(data)
        if naks[0] > 0 and event is not None:
            naks[0] -= 1
            print(json.dumps({"nak": data.decode("ascii", "replace")}), flush=True)
            return NAKEvent()
        return event

    server.parse_and_check_event = parse_or_nak
    client.start()
    print("listening", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
