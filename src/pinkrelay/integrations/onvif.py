"""ONVIF events as a press: a camera's digital input (the panic button wired to it) raises the alert.

Sans-IO halves (envelopes, the WS-Security digest, parsing) and one trio
task (``OnvifPresses.run``) that moves them over HTTP with httpx:

1. ``GetCapabilities`` (Events) on the device service gives the events service address;
2. ``CreatePullPointSubscription`` there gives a subscription address;
3. ``PullMessages`` in a loop (each waits up to ``pull_timeout`` on the
   camera), with ``Renew`` before the subscription's termination time;
4. every ``tns1:Device/Trigger/DigitalInput`` notification whose
   ``LogicalState`` becomes true is a press (optionally only for one input token);
5. ``Unsubscribe`` when the bridge stops. A camera that goes away or
   refuses is retried with backoff; a wrong password is a clear error.

Authentication is the WS-Security UsernameToken with PasswordDigest that
ONVIF Core requires: Base64(SHA-1(nonce + created + password)).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

import httpx
import trio

log = logging.getLogger("pinkrelay.camera_bridge")

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
}
DIGITAL_INPUT = "tns1:Device/Trigger/DigitalInput"
_PASSWORD_DIGEST = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
                    "#PasswordDigest")
_NONCE_ENCODING = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0"
                   "#Base64Binary")


class OnvifError(Exception):
    """The camera answered with a SOAP fault or something that is not ONVIF; the message says which."""


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken PasswordDigest: Base64(SHA-1(nonce + created + password))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def envelope(body: str, *, user: str, password: str, now: datetime.datetime, nonce: bytes,
             to: str = "", action: str = "") -> bytes:
    """A SOAP 1.2 envelope with the UsernameToken header (and WS-Addressing To/Action when given)."""
    created = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    addressing = ""
    if action:
        addressing += f'<wsa:Action s:mustUnderstand="1">{_escape(action)}</wsa:Action>'
    if to:
        addressing += f'<wsa:To s:mustUnderstand="1">{_escape(to)}</wsa:To>'
    security = ""
    if user:
        security = (
            f'<wsse:Security s:mustUnderstand="1"><wsse:UsernameToken>'
            f"<wsse:Username>{_escape(user)}</wsse:Username>"
            f'<wsse:Password Type="{_PASSWORD_DIGEST}">{password_digest(nonce, created, password)}</wsse:Password>'
            f'<wsse:Nonce EncodingType="{_NONCE_ENCODING}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
            f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{NS["s"]}" xmlns:wsse="{NS["wsse"]}" '
        f'xmlns:wsu="{NS["wsu"]}" xmlns:wsa="{NS["wsa"]}" xmlns:wsnt="{NS["wsnt"]}" xmlns:tds="{NS["tds"]}" '
        f'xmlns:tev="{NS["tev"]}" xmlns:tt="{NS["tt"]}"><s:Header>{security}{addressing}</s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


GET_CAPABILITIES = "<tds:GetCapabilities><tds:Category>Events</tds:Category></tds:GetCapabilities>"


def create_pull_point(termination: str = "PT60S") -> str:
    return (f"<tev:CreatePullPointSubscription><tev:InitialTerminationTime>{termination}"
            "</tev:InitialTerminationTime></tev:CreatePullPointSubscription>")


def pull_messages(timeout: str = "PT5S", limit: int = 32) -> str:
    return f"<tev:PullMessages><tev:Timeout>{timeout}</tev:Timeout><tev:MessageLimit>{limit}</tev:MessageLimit></tev:PullMessages>"


def renew(termination: str = "PT60S") -> str:
    return f"<wsnt:Renew><wsnt:TerminationTime>{termination}</wsnt:TerminationTime></wsnt:Renew>"


UNSUBSCRIBE = "<wsnt:Unsubscribe/>"


def _parse(xml: bytes) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise OnvifError(f"the camera's answer is not XML ({error})") from None
    fault = root.find(".//s:Fault", NS)
    if fault is not None:
        reason = " ".join(t.strip() for t in fault.find("s:Reason", NS).itertext()) if fault.find(
            "s:Reason", NS) is not None else ""
        subcodes = [c.text or "" for c in fault.iter(f"{{{NS['s']}}}Value")]
        raise OnvifError(f"the camera refused: {reason or 'SOAP fault'} ({', '.join(subcodes)})")
    return root


def events_address(xml: bytes) -> str:
    """The events service XAddr from a GetCapabilitiesResponse."""
    address = _parse(xml).findtext(".//tt:Events/tt:XAddr", namespaces=NS)
    if not address:
        raise OnvifError("the camera has no events service (no Events XAddr in GetCapabilities)")
    return address.strip()


def subscription_address(xml: bytes) -> str:
    """The pull point's address from a CreatePullPointSubscriptionResponse."""
    address = _parse(xml).findtext(".//tev:SubscriptionReference/wsa:Address", namespaces=NS)
    if not address:
        raise OnvifError("CreatePullPointSubscription answered without a SubscriptionReference address")
    return address.strip()


@dataclass(frozen=True, slots=True)
class InputChange:
    """A digital input's new state from one notification."""

    token: str
    active: bool


def digital_inputs(xml: bytes) -> list[InputChange]:
    """The digital-input changes in a PullMessagesResponse, in order; other topics are ignored."""
    changes = []
    for message in _parse(xml).iterfind(".//wsnt:NotificationMessage", NS):
        topic = (message.findtext("wsnt:Topic", namespaces=NS) or "").strip()
        if topic.rsplit(":", 1)[-1] != DIGITAL_INPUT.rsplit(":", 1)[-1]:
            continue
        token = ""
        for item in message.iterfind(".//tt:Source/tt:SimpleItem", NS):
            if item.get("Name") == "InputToken":
                token = item.get("Value", "")
        for item in message.iterfind(".//tt:Data/tt:SimpleItem", NS):
            if item.get("Name") == "LogicalState":
                changes.append(InputChange(token, item.get("Value", "").lower() in ("true", "1")))
    return changes


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@dataclass(frozen=True, slots=True)
class OnvifTarget:
    """``onvif:http://USER:PASS@HOST/onvif/device_service[#INPUT_TOKEN]`` as parts."""

    device_url: str
    user: str
    password: str
    input_token: str = ""

    @classmethod
    def parse(cls, text: str) -> OnvifTarget:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{text!r} is not an http(s) URL of the camera's ONVIF device service")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path or "/onvif/device_service", parts.query, ""))
        return cls(url, parts.username or "", parts.password or "", parts.fragment)


class OnvifPresses:
    """Follow a camera's ONVIF events and call ``press`` for each digital input that turns on."""

    def __init__(self, target: OnvifTarget, press: Callable[[], Awaitable[Any]], *,
                 pull_timeout: float = 5.0, termination: float = 60.0, retry_max: float = 30.0,
                 counters: dict[str, int] | None = None, on_error: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.press = press
        self.pull_timeout = pull_timeout
        self.termination = termination
        self.retry_max = retry_max
        self.counters = counters if counters is not None else {}
        for name in ("onvif_presses", "onvif_failures"):
            self.counters.setdefault(name, 0)
        self.on_error = on_error
        self.subscribed = trio.Event()

    async def _call(self, client: httpx.AsyncClient, url: str, body: str, action: str) -> bytes:
        data = envelope(body, user=self.target.user, password=self.target.password,
                        now=datetime.datetime.now(datetime.timezone.utc), nonce=secrets.token_bytes(16),
                        to=url, action=action)
        response = await client.post(url, content=data, headers={
            "content-type": f'application/soap+xml; charset=utf-8; action="{action}"'})
        if response.status_code >= 400 and b"Fault" not in response.content:
            raise OnvifError(f"the camera answered HTTP {response.status_code} at {url}")
        return response.content

    async def run(self) -> None:
        """Until cancelled: subscribe, pull, press; on any failure log it, wait (backoff), start again."""
        delay = 0.5
        while True:
            try:
                await self._follow()
            except (OnvifError, httpx.HTTPError) as error:
                self.counters["onvif_failures"] += 1
                reason = f"ONVIF events of {self.target.device_url}: {error}; retrying in {delay:.1f} s"
                log.warning("%s", reason)
                if self.on_error is not None:
                    self.on_error(reason)
            await trio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.retry_max)

    async def _follow(self) -> None:
        timeout = httpx.Timeout(self.pull_timeout + 10.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            events = events_address(await self._call(
                client, self.target.device_url, GET_CAPABILITIES, f"{NS['tds']}/GetCapabilities"))
            pull_point = subscription_address(await self._call(
                client, events, create_pull_point(f"PT{self.termination:g}S"),
                f"{NS['tev']}/EventPortType/CreatePullPointSubscriptionRequest"))
            log.info("camera ONVIF events: subscribed at %s", pull_point)
            self.subscribed.set()
            renew_at = trio.current_time() + self.termination / 2
            active: dict[str, bool] = {}
            try:
                while True:
                    if trio.current_time() >= renew_at:
                        _parse(await self._call(client, pull_point, renew(f"PT{self.termination:g}S"),
                                                f"{NS['wsnt']}/SubscriptionManager/RenewRequest"))
                        renew_at = trio.current_time() + self.termination / 2
                    answer = await self._call(client, pull_point, pull_messages(f"PT{self.pull_timeout:g}S"),
                                              f"{NS['tev']}/PullPointSubscription/PullMessagesRequest")
                    for change in digital_inputs(answer):
                        if self.target.input_token and change.token != self.target.input_token:
                            continue
                        was = active.get(change.token, False)
                        active[change.token] = change.active
                        if change.active and not was:
                            self.counters["onvif_presses"] += 1
                            log.warning("camera digital input %s is on: pressing", change.token or "(any)")
                            await self.press()
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    try:
                        await self._call(client, pull_point, UNSUBSCRIBE,
                                         f"{NS['wsnt']}/SubscriptionManager/UnsubscribeRequest")
                    except (OnvifError, httpx.HTTPError):
                        pass
