"""ONVIF events as presses: the WS-Security digest, the Events envelopes, and a real bridge and relay.

The camera side is an ONVIF events endpoint served over real HTTP in this
test (no ONVIF camera or simulator is packaged for this machine): it checks
each request's UsernameToken digest as a camera does and answers
GetCapabilities, CreatePullPointSubscription, PullMessages, Renew and
Unsubscribe with envelopes shaped as the ONVIF Events specification shows.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from xml.etree import ElementTree

import h11
import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.cli.camera_bridge import CameraBridge, parse_press_inputs
from pinkrelay.cli.common import CommandError
from pinkrelay.integrations.onvif import NS, OnvifError, OnvifTarget, digital_inputs, password_digest

from relay_helpers import relay_config, secret_for, wait_until

CAMERA = "kp-cam-009"
SITE = pinkrelay.Site(name="Hayatabad gate camera", kind="campus", latitude=33.98, longitude=71.43)
USER, PASSWORD = "bridge", "camera-password-9"


def test_the_password_digest_matches_onvifs_published_example():
    # ONVIF Application Programmer's Guide, the UsernameToken example.
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword") == "tuOSpGlFlIXsozq4HFNeeGeFLEI="


def test_digital_inputs_are_read_from_a_pull_messages_response_and_faults_are_errors():
    changes = digital_inputs(_pull_response([("DigitalInput1", "true"), ("DigitalInput2", "false")],
                                            extra_topic=True))
    assert [(c.token, c.active) for c in changes] == [("DigitalInput1", True), ("DigitalInput2", False)]
    with pytest.raises(OnvifError, match="the camera refused: Sender not Authorized .*NotAuthorized"):
        digital_inputs(_fault())
    with pytest.raises(OnvifError, match="not XML"):
        digital_inputs(b"<html")
    target = OnvifTarget.parse("http://bridge:pw@192.0.2.64/onvif/device_service#DigitalInput1")
    assert (target.device_url, target.user, target.password, target.input_token) == (
        "http://192.0.2.64/onvif/device_service", "bridge", "pw", "DigitalInput1")
    with pytest.raises(CommandError, match="onvif:URL|http"):
        parse_press_inputs(["onvif:ftp://camera"])


class FakeCameraEvents:
    """A camera's ONVIF device and events services on 127.0.0.1, checking every digest."""

    def __init__(self, password: str = PASSWORD) -> None:
        self.password = password
        self.pending: list[tuple[str, str]] = []
        self.calls: list[str] = []
        self.refused = 0
        self.port = 0

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._client, listeners)

    async def _client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Data):
                body += event.data
            if isinstance(event, h11.EndOfMessage):
                answer = await self._answer(body)
                await stream.send_all(conn.send(h11.Response(status_code=200 if b"Fault" not in answer else 400,
                                                             headers=[("content-length", str(len(answer))),
                                                                      ("connection", "keep-alive")])))
                await stream.send_all(conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
                body = b""
            if isinstance(event, h11.ConnectionClosed):
                return

    async def _answer(self, body: bytes) -> bytes:
        root = ElementTree.fromstring(body)
        token = root.find(".//wsse:UsernameToken", NS)
        nonce = base64.b64decode(token.findtext("wsse:Nonce", namespaces=NS))
        created = token.findtext("wsu:Created", namespaces=NS)
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.password.encode()).digest())
        if token.findtext("wsse:Username", namespaces=NS) != USER or \
                token.findtext("wsse:Password", namespaces=NS) != expected.decode():
            self.refused += 1
            return _fault()
        operation = next(iter(root.find("s:Body", NS))).tag.rsplit("}", 1)[1]
        self.calls.append(operation)
        base = f"http://127.0.0.1:{self.port}"
        if operation == "GetCapabilities":
            return _soap(f'<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Events><tt:XAddr>{base}/onvif/'
                         "event_service</tt:XAddr></tt:Events></tds:Capabilities></tds:GetCapabilitiesResponse>")
        if operation == "CreatePullPointSubscription":
            return _soap(f"<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>{base}"
                         "/onvif/subscription-1</wsa:Address></tev:SubscriptionReference>"
                         "</tev:CreatePullPointSubscriptionResponse>")
        if operation == "PullMessages":
            with trio.move_on_after(0.5):
                while not self.pending:
                    await trio.sleep(0.02)
            changes, self.pending = self.pending, []
            return _pull_response(changes)
        return _soap(f"<wsnt:{operation}Response/>")


def _soap(body: str) -> bytes:
    namespaces = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {namespaces}><s:Body>{body}</s:Body></s:Envelope>'.encode()


def _pull_response(changes: list[tuple[str, str]], extra_topic: bool = False) -> bytes:
    messages = "".join(
        '<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/'
        f'ConcreteSet">tns1:Device/Trigger/DigitalInput</wsnt:Topic><wsnt:Message><tt:Message '
        f'UtcTime="2026-12-07T10:00:00Z" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="InputToken" '
        f'Value="{token}"/></tt:Source><tt:Data><tt:SimpleItem Name="LogicalState" Value="{state}"/></tt:Data>'
        "</tt:Message></wsnt:Message></wsnt:NotificationMessage>" for token, state in changes)
    if extra_topic:
        messages = ('<wsnt:NotificationMessage><wsnt:Topic>tns1:VideoSource/MotionAlarm</wsnt:Topic><wsnt:Message>'
                    '<tt:Message><tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data></tt:Message>'
                    "</wsnt:Message></wsnt:NotificationMessage>") + messages
    return _soap("<tev:PullMessagesResponse><tev:CurrentTime>2026-12-07T10:00:00Z</tev:CurrentTime>"
                 f"<tev:TerminationTime>2026-12-07T10:01:00Z</tev:TerminationTime>{messages}"
                 "</tev:PullMessagesResponse>")


def _fault() -> bytes:
    return _soap('<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:NotAuthorized</s:Value>'
                 '</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">Sender not Authorized</s:Text></s:Reason>'
                 "</s:Fault>")


@trio_test
async def test_a_digital_input_on_the_camera_raises_an_alert_through_the_bridge(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "pinkrelay.camera_bridge")
    registry = pinkrelay.Registry([pinkrelay.Button(button_id=CAMERA, secret=secret_for(CAMERA), site=SITE)])
    async with pinkrelay.open_relay(relay_config(tmp_path), registry=registry) as relay, \
            trio.open_nursery() as nursery:
        camera = await nursery.start(FakeCameraEvents().serve)
        wrong = await nursery.start(FakeCameraEvents("another-password").serve)
        inputs = parse_press_inputs([
            f"onvif:http://{USER}:{PASSWORD}@127.0.0.1:{camera.port}/onvif/device_service#DigitalInput1",
            f"onvif:http://{USER}:{PASSWORD}@127.0.0.1:{wrong.port}/onvif/device_service",
        ])
        # No RTSP server: the camera's stream is down, and a press still goes through.
        bridge = CameraBridge(relay.buttons_address, CAMERA, secret_for(CAMERA), "rtsp://127.0.0.1:9/none",
                              press_inputs=inputs, retry_max=1.0)
        await nursery.start(bridge.run)
        await wait_until(lambda: "PullMessages" in camera.calls, timeout=10, what="the bridge subscribed")
        camera.pending = [("DigitalInput2", "true"), ("DigitalInput1", "false")]  # another input: no press
        await trio.sleep(0.8)
        assert not await relay.journal.open_alerts()
        camera.pending = [("DigitalInput1", "true")]
        await wait_until(lambda: bridge.counters["onvif_presses"] == 1, timeout=10, what="the press")
        camera.pending = [("DigitalInput1", "true")]  # still on: not a second press
        await trio.sleep(0.8)

        async def stored() -> list:
            return [a for a in await relay.journal.open_alerts() if a.button == CAMERA]

        with trio.fail_after(10):
            while not await stored():
                await trio.sleep(0.05)
        alerts = await stored()
        assert len(alerts) == 1 and alerts[0].site.name == SITE.name
        assert camera.calls[:2] == ["GetCapabilities", "CreatePullPointSubscription"]
        # The wrong password: refused by the camera, retried, said plainly.
        await wait_until(lambda: wrong.refused >= 2, timeout=10, what="retries against the wrong password")
        assert bridge.counters["onvif_failures"] >= 2
        assert any(f"ONVIF events of http://127.0.0.1:{wrong.port}/onvif/device_service: the camera refused: "
                   "Sender not Authorized" in record.getMessage() for record in caplog.records)
        nursery.cancel_scope.cancel()
