"""CAP 1.2: each step as XML that the OASIS CAP 1.2 schema (tests/data/CAP-v1.2.xsd) accepts, by sink and by API."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import httpx
import trio
from lxml import etree
from trio.testing import trio_test

import pinkrelay
from pinkrelay.integrations.cap import cap_xml
from pinkrelay.integrations.outbox import Delivery
from pinkrelay.integrations.settings import WebhookConfig
from pinkrelay.operators import OperatorStore
from pinkrelay.web import serve_web

from relay_helpers import button_client, button_ids, make_registry, relay_config, wait_until
from webhook_peer import WebhookPeer, press_acknowledge_resolve

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "CAP-v1.2.xsd")))
NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
SECRET = b"cap-sink-secret-for-tests-0123456"


def valid(xml: bytes) -> etree._Element:
    document = etree.fromstring(xml)
    assert SCHEMA.validate(document), SCHEMA.error_log
    return document


def text(document: etree._Element, path: str) -> str:
    return document.findtext(path, namespaces=NS)


def test_the_schema_refuses_what_cap_forbids():
    delivery = Delivery(sink="", cursor=5, attempts=0, alert_id="a1", step="raised", state="raised", level=0,
                        operator="", console="", unit="", note="", at=1_765_108_683_000_000, button="b1",
                        alert_kind="offline", pressed_at=0, received_at=1_765_108_683_000_000, attempt=1,
                        duplicate_of="", site=None, first_cursor=5)
    document = valid(cap_xml(delivery, relay_name="kp"))  # no site: no area, still valid
    assert text(document, "cap:msgType") == "Alert" and text(document, "cap:info/cap:category") == "Safety"
    broken = cap_xml(delivery, relay_name="kp").replace(b"+00:00</cap:sent>", b"Z</cap:sent>") \
        .replace(b"+00:00</sent>", b"Z</sent>")
    assert not SCHEMA.validate(etree.fromstring(broken))
    cancelled = valid(cap_xml(dataclasses.replace(delivery, cursor=9, step="transition", state="false_alarm",
                                                  operator="saima"), relay_name="kp"))
    assert text(cancelled, "cap:msgType") == "Cancel"
    assert text(cancelled, "cap:references") == "pinkrelay@kp,pinkrelay-kp-a1-5,2025-12-07T11:58:03+00:00"


@trio_test
async def test_the_cap_sink_posts_each_step_as_schema_valid_cap(tmp_path):
    with WebhookPeer(SECRET) as peer:
        sink = WebhookConfig(name="warning-system", kind="cap", url=peer.url, secret=SECRET, retry_min=0.05,
                             retry_max=0.2, timeout=2.0)
        config = relay_config(tmp_path, sinks=(sink,))
        async with pinkrelay.open_relay(config, registry=make_registry(3)) as relay, \
                trio.open_nursery() as nursery:
            receipt = await press_acknowledge_resolve(relay, nursery, peer)
            nursery.cancel_scope.cancel()
    assert peer.bad_signatures == 0
    assert {r["content_type"] for r in peer.requests} == {"application/cap+xml"}
    documents = [valid(peer.stored[key]) for key in peer.stored_order]
    assert [text(d, "cap:msgType") for d in documents] == ["Alert", "Update", "Update"]
    first_id = text(documents[0], "cap:identifier")
    assert first_id.endswith(receipt.alert_id + "-" + peer.stored_order[0].rsplit(":", 1)[1])
    assert all(first_id in text(d, "cap:references") for d in documents[1:])
    raised = documents[0]
    assert text(raised, "cap:info/cap:urgency") == "Immediate"
    assert text(raised, "cap:info/cap:area/cap:areaDesc") == "Qissa Khwani Bazaar #1"
    assert text(raised, "cap:info/cap:area/cap:circle") == "34.008600,71.568300 0.1"
    assert text(documents[2], "cap:info/cap:responseType") == "AllClear"


@trio_test
async def test_cap_of_an_alert_and_the_sinks_status_from_the_web_api(tmp_path):
    operator, secret = "asma", "asma-secret-for-tests-1"
    OperatorStore.in_data_dir(tmp_path).add(operator, "operator", secret=secret)
    with WebhookPeer(SECRET) as peer:
        sink = WebhookConfig(name="cad", kind="webhook", url=peer.url, secret=SECRET)
        config = relay_config(tmp_path, sinks=(sink,))
        async with pinkrelay.open_relay(config, registry=make_registry(3)) as relay, \
                trio.open_nursery() as nursery:
            room = await nursery.start(partial(serve_web, relay, pinkrelay.Address("127.0.0.1", 0)))
            button = button_client(relay, button_ids(1)[0])
            await nursery.start(button.run)
            receipt = await button.press(timeout=5)
            await wait_until(lambda: len(peer.stored) == 1, timeout=10)
            async with httpx.AsyncClient(base_url=room.url, timeout=10.0) as http:
                assert (await http.get(f"/api/alerts/{receipt.alert_id}/cap")).status_code == 401
                signed_in = await http.post("/signin", data={"name": operator, "secret": secret})
                assert signed_in.status_code == 303
                cap = await http.get(f"/api/alerts/{receipt.alert_id}/cap")
                missing = await http.get("/api/alerts/no-such-alert/cap")
                status = (await http.get("/api/integrations")).json()
            nursery.cancel_scope.cancel()
    assert cap.status_code == 200 and cap.headers["content-type"] == "application/cap+xml"
    document = valid(cap.content)
    assert text(document, "cap:incidents") == receipt.alert_id
    assert text(document, "cap:msgType") == "Alert"
    assert missing.status_code == 404 and "no alert no-such-alert" in missing.json()["error"]
    assert status["sinks"][0]["name"] == "cad" and status["sinks"][0]["delivered"] == 1
