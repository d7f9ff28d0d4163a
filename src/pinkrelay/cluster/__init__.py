"""Several relays as one control room, on NATS JetStream (``cluster_nats_urls``; docs/operations.md §22).

- ``bridge.py``: nats-py on an asyncio loop in a thread of its own, awaited from trio.
- ``records.py``: subjects, message ids and record bodies (sans-IO).
- ``view.py``: the control room's state read from the stream (sans-IO).
- ``bus.py``: the relay's alert store on the replicated stream.
- ``kv.py``: which relay holds which button, and the relays' leases (KV buckets).
- ``membership.py``: a relay's part: claims, fencing, orphans' supervision.

Nothing outside this package imports nats; a relay without ``cluster_nats_urls``
never loads it.
"""
