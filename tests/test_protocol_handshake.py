"""The sans-IO handshake: hello → challenge → auth → welcome, and every way it fails."""

from __future__ import annotations

import pytest

from pinkrelay.errors import AuthenticationFailed, ProtocolError, StateError
from pinkrelay.protocol import (
    Authenticate,
    ButtonConnection,
    Challenge,
    ConsoleConnection,
    Error,
    Goodbye,
    Hello,
    RelayConnection,
    State,
    Welcome,
    compute_proof,
)

try:
    from protocol_pair import (
        BUTTON_ID,
        BUTTON_SECRET,
        CHUNK_SIZE,
        CONSOLE_TOKEN,
        NONCE,
        OPERATOR,
        SESSION,
        TRACK_IDS,
        Pair,
        button_pair,
        console_pair,
        control_frame,
        deliver,
        handshake,
        media_frame,
    )
except ImportError:  # tests/ turned into a package
    from .protocol_pair import (  # type: ignore[no-redef]
        BUTTON_ID,
        BUTTON_SECRET,
        CHUNK_SIZE,
        CONSOLE_TOKEN,
        NONCE,
        OPERATOR,
        SESSION,
        TRACK_IDS,
        Pair,
        button_pair,
        console_pair,
        control_frame,
        deliver,
        handshake,
        media_frame,
    )

OTHER_NONCE = bytes(range(100, 132))


def new_button(**kwargs) -> ButtonConnection:
    kwargs.setdefault("counter", 1000)
    return ButtonConnection(BUTTON_ID, BUTTON_SECRET, **kwargs)


def new_console(**kwargs) -> ConsoleConnection:
    kwargs.setdefault("counter", 2000)
    return ConsoleConnection(OPERATOR, CONSOLE_TOKEN, **kwargs)


def assert_failed(conn, error_type=StateError, code=None):
    """``conn`` is closed and reports ``error_type`` from next_event, every time."""
    assert conn.closed
    assert conn.get_timer() is None
    assert conn.handle_timer(1e9) == b""
    with pytest.raises(error_type) as first:
        conn.next_event()
    with pytest.raises(error_type) as second:
        conn.next_event()
    assert first.value is second.value is conn.error
    if code is not None:
        assert first.value.code == code
    return first.value


# -- success -------------------------------------------------------------------


def test_button_handshake_reaches_ready_with_the_welcome_values():
    pair = button_pair(
        relay_kwargs={"heartbeat_interval": 4.0, "supervision_window": 9.0}, now=50.0
    )
    button, relay = pair.client, pair.relay

    assert relay.authenticated
    assert relay.hello == Hello(
        role="button", identity=BUTTON_ID, counter=1000, software="pinkrelay"
    )
    assert relay.identity == BUTTON_ID
    assert relay.assigned_tracks == TRACK_IDS
    assert relay.chunk_size == CHUNK_SIZE

    assert button.welcome == Welcome(
        session=SESSION,
        heartbeat_interval=4.0,
        supervision_window=9.0,
        chunk_size=CHUNK_SIZE,
        max_frame_bytes=relay.limits.max_frame_bytes,
        track_ids=TRACK_IDS,
    )
    assert button.track_ids == TRACK_IDS
    assert button.chunk_size == CHUNK_SIZE
    assert (button.heartbeat_interval, button.supervision_window) == (4.0, 9.0)

    for conn in (button, relay):
        assert conn.state is State.READY and not conn.closed and conn.error is None
        assert conn.next_event() is None
        # Ready: the next timer is the heartbeat, no longer the handshake deadline.
        assert conn.get_timer() == 54.0


def test_console_handshake_reaches_ready_without_tracks():
    pair = console_pair()
    console, relay = pair.client, pair.relay
    assert relay.role == "console" and relay.identity == OPERATOR and relay.authenticated
    assert relay.assigned_tracks == ()
    assert console.welcome is not None and console.welcome.track_ids == ()
    assert console.state is State.READY and relay.state is State.READY


def test_the_proof_is_the_documented_hmac_and_the_secret_never_travels():
    pair = button_pair()
    t = pair.transcript
    expected = compute_proof(BUTTON_SECRET, NONCE, "button", BUTTON_ID, 1000)
    assert expected in t.auth
    wire = t.hello + t.challenge + t.auth + t.welcome
    assert BUTTON_SECRET not in wire


def test_default_nonces_are_fresh_per_connection():
    nonces = []
    for _ in range(2):
        button, relay = new_button(), RelayConnection(role="button")
        relay.receive_data(button.hello(0.0), 0.0)
        [challenge] = deliver(button, relay.challenge(0.0), 0.0)
        assert isinstance(challenge, Challenge) and len(challenge.nonce) == 32
        nonces.append(challenge.nonce)
        deliver(relay, button.authenticate(0.0))
        relay.verify(BUTTON_SECRET)
        deliver(button, relay.welcome(session="s", now=0.0))
        assert button.state is State.READY
    assert nonces[0] != nonces[1]


def test_handshake_split_into_single_bytes():
    button, relay = new_button(), RelayConnection(role="button")
    pair = Pair(client=button, relay=relay)
    hello = button.hello(0.0)
    assert pair.to_relay([hello[i : i + 1] for i in range(len(hello))]) == [relay.hello]
    challenge = relay.challenge(0.0, nonce=NONCE)
    assert pair.to_client([challenge[i : i + 1] for i in range(len(challenge))]) == [
        Challenge(nonce=NONCE)
    ]


# -- authentication failures ---------------------------------------------------


def _until_auth(client, relay, nonce=NONCE) -> Pair:
    pair = Pair(client=client, relay=relay)
    pair.to_relay(client.hello(0.0))
    pair.to_client(relay.challenge(0.0, nonce=nonce))
    [auth] = pair.to_relay(client.authenticate(0.0))
    assert isinstance(auth, Authenticate)
    return pair


@pytest.mark.parametrize("make_client", [new_button, new_console], ids=["button", "console"])
def test_wrong_secret_is_refused_with_a_generic_public_reason(make_client):
    client = make_client()
    relay = RelayConnection(role=client.role)
    pair = _until_auth(client, relay)

    with pytest.raises(AuthenticationFailed) as caught:
        relay.verify(b"the secret the registry holds for someone else")
    failure = caught.value
    assert isinstance(failure, PermissionError)
    # The precise reason (for the relay's log) names the identity and the cause...
    assert client.identity in str(failure) and "wrong proof" in str(failure)
    # ...and the connection is dead: closed, no welcome possible, error kept.
    assert relay.closed and not relay.authenticated
    assert assert_failed(relay, AuthenticationFailed) is failure
    with pytest.raises(StateError):
        relay.welcome(session="s")

    [event] = pair.to_client(relay.error_frame(failure))
    assert event == Error(code="auth", message="authentication failed", fatal=True)
    # The public reason reveals nothing: not the identity, not why.
    for detail in (client.identity, "proof", "secret", "counter"):
        assert detail not in event.message
    assert client.closed and client.state is State.CLOSED
    assert client.get_timer() is None
    assert client.welcome is None


@pytest.mark.parametrize(
    ("last_counter", "accepted"),
    [(0, True), (999, True), (1000, False), (1001, False), (2**63, False)],
)
def test_counter_must_be_above_the_last_accepted(last_counter, accepted):
    client, relay = new_button(counter=1000), RelayConnection(role="button")
    pair = _until_auth(client, relay)
    if accepted:
        relay.verify(BUTTON_SECRET, last_counter)
        assert relay.authenticated
        return
    with pytest.raises(AuthenticationFailed) as caught:
        relay.verify(BUTTON_SECRET, last_counter)
    assert "1000" in str(caught.value)  # the log line has the numbers
    assert relay.closed and not relay.authenticated
    [event] = pair.to_client(relay.error_frame(caught.value))
    assert isinstance(event, Error) and event.code == "auth" and event.fatal
    assert event.message == caught.value.public_reason
    assert event.message.startswith("authentication failed")
    assert "1000" not in event.message and BUTTON_ID not in event.message


def test_captured_handshake_replayed_to_a_new_relay_connection_is_refused():
    first = button_pair()
    captured = first.transcript
    assert first.relay.authenticated

    # The attacker replays hello, waits for the (new) challenge, replays auth.
    relay = RelayConnection(role="button")
    [hello] = deliver(relay, captured.hello)
    assert hello.identity == BUTTON_ID and hello.counter == 1000
    relay.challenge(0.0, nonce=OTHER_NONCE)
    [auth] = deliver(relay, captured.auth)
    assert isinstance(auth, Authenticate)
    # Refused by the proof alone, even if the relay had not stored the counter.
    with pytest.raises(AuthenticationFailed, match="wrong proof"):
        relay.verify(BUTTON_SECRET, last_counter=0)
    assert relay.closed and not relay.authenticated


def test_captured_handshake_refused_by_counter_even_if_a_nonce_repeats():
    first = button_pair()
    relay = RelayConnection(role="button")
    deliver(relay, first.transcript.hello)
    relay.challenge(0.0, nonce=NONCE)  # the same nonce as the captured session
    deliver(relay, first.transcript.auth)
    with pytest.raises(AuthenticationFailed, match="counter"):
        relay.verify(BUTTON_SECRET, last_counter=first.relay.hello.counter)


def test_captured_hello_and_auth_in_one_burst_is_a_state_error():
    first = button_pair()
    relay = RelayConnection(role="button")
    with pytest.raises(StateError):
        deliver(relay, first.transcript.hello + first.transcript.auth)
    assert_failed(relay, StateError, "bad-state")
    assert not relay.authenticated


# -- wrong listener ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_client", "listener"), [(new_console, "button"), (new_button, "console")]
)
def test_client_on_the_wrong_listener(make_client, listener):
    client = make_client()
    relay = RelayConnection(role=listener)
    relay.receive_data(client.hello(0.0), 0.0)
    error = assert_failed(relay, StateError, "wrong-listener")
    assert client.role in str(error) and listener in str(error)
    assert relay.hello is None

    [event] = deliver(client, relay.error_frame(error))
    assert isinstance(event, Error) and event.code == "wrong-listener" and event.fatal
    assert client.closed


# -- frames out of order -------------------------------------------------------


def _relay_in(state: State) -> tuple[ButtonConnection, RelayConnection]:
    """A button and a relay whose handshake stopped at ``state`` (relay side)."""
    button, relay = new_button(), RelayConnection(role="button")
    if state is State.START:
        return button, relay
    deliver(relay, button.hello(0.0))
    if state is State.HELLO:
        return button, relay
    deliver(button, relay.challenge(0.0, nonce=NONCE))
    if state is State.CHALLENGE:
        return button, relay
    deliver(relay, button.authenticate(0.0))
    assert state is State.AUTH
    return button, relay


HELLO = Hello(role="button", identity=BUTTON_ID, counter=5)
AUTH = Authenticate(proof=b"\x07" * 32)
WELCOME = Welcome(
    session="s", heartbeat_interval=10, supervision_window=20, chunk_size=256, max_frame_bytes=65536
)


@pytest.mark.parametrize(
    ("state", "frame"),
    [
        pytest.param(State.START, media_frame(101), id="media-at-start"),
        pytest.param(State.HELLO, media_frame(101), id="media-after-hello"),
        pytest.param(State.CHALLENGE, media_frame(101), id="media-after-challenge"),
        pytest.param(State.AUTH, media_frame(101), id="media-before-welcome"),
        pytest.param(State.START, control_frame(AUTH), id="auth-before-hello"),
        pytest.param(State.HELLO, control_frame(AUTH), id="auth-before-challenge"),
        pytest.param(State.HELLO, control_frame(HELLO), id="second-hello"),
        pytest.param(State.AUTH, control_frame(HELLO), id="hello-after-auth"),
        pytest.param(State.AUTH, control_frame(AUTH), id="second-auth"),
        pytest.param(State.AUTH, control_frame(WELCOME), id="welcome-from-the-client"),
        pytest.param(State.START, control_frame(WELCOME), id="welcome-from-the-client-first"),
        pytest.param(
            State.HELLO, control_frame(Challenge(nonce=NONCE)), id="challenge-from-client"
        ),
    ],
)
def test_relay_refuses_frames_out_of_order(state, frame):
    _, relay = _relay_in(state)
    assert relay.state is state
    relay.receive_data(frame, 1.0)
    assert_failed(relay, StateError, "bad-state")


def test_relay_refuses_a_second_hello_after_ready():
    pair = button_pair()
    with pytest.raises(StateError):
        pair.to_relay(pair.transcript.hello)
    assert_failed(pair.relay, StateError)


@pytest.mark.parametrize(
    ("steps", "frame"),
    [
        pytest.param(0, control_frame(Challenge(nonce=NONCE)), id="challenge-before-hello"),
        pytest.param(1, control_frame(WELCOME), id="welcome-without-auth"),
        pytest.param(2, control_frame(Challenge(nonce=NONCE)), id="second-challenge"),
        pytest.param(3, control_frame(HELLO), id="hello-from-the-relay"),
        pytest.param(3, media_frame(101), id="media-before-welcome"),
        pytest.param(3, control_frame(AUTH), id="auth-from-the-relay"),
    ],
)
def test_client_refuses_frames_out_of_order(steps, frame):
    button, relay = new_button(), RelayConnection(role="button")
    if steps >= 1:
        deliver(relay, button.hello(0.0))
    if steps >= 2:
        deliver(button, relay.challenge(0.0, nonce=NONCE))
    if steps >= 3:
        deliver(relay, button.authenticate(0.0))
    button.receive_data(frame, 1.0)
    assert_failed(button, StateError, "bad-state")
    assert button.welcome is None


def test_sides_refuse_to_send_out_of_order():
    button, relay = new_button(), RelayConnection(role="button")
    with pytest.raises(StateError):
        button.authenticate(0.0)  # no challenge yet
    with pytest.raises(StateError):
        button.send(AUTH)
    with pytest.raises(StateError):
        button.send_media(101, 0, 0, b"frame")
    with pytest.raises(StateError):
        relay.challenge(0.0)  # no hello yet
    with pytest.raises(StateError):
        relay.verify(BUTTON_SECRET)
    with pytest.raises(StateError):
        relay.welcome(session="s")

    deliver(relay, button.hello(0.0))
    with pytest.raises(StateError):
        button.hello(0.0)  # a second hello
    with pytest.raises(StateError):
        relay.verify(BUTTON_SECRET)  # no proof yet
    deliver(button, relay.challenge(0.0, nonce=NONCE))
    deliver(relay, button.authenticate(0.0))
    with pytest.raises(StateError):
        relay.welcome(session="s")  # not verified
    with pytest.raises(StateError):
        button.send(WELCOME)  # a client never sends welcome
    # None of the refusals changed either side: the handshake still completes.
    assert (button.state, relay.state) == (State.AUTH, State.AUTH)
    relay.verify(BUTTON_SECRET)
    deliver(button, relay.welcome(session="s", track_ids=TRACK_IDS))
    assert button.state is State.READY and relay.state is State.READY


def test_goodbye_during_the_handshake_closes_without_error():
    button, relay = _relay_in(State.HELLO)
    [event] = deliver(relay, button.send(Goodbye(reason="battery low")))
    assert event == Goodbye(reason="battery low")
    assert relay.closed and relay.error is None
    assert relay.next_event() is None
    assert relay.get_timer() is None


def test_garbage_during_the_handshake_is_a_frame_error():
    relay = RelayConnection(role="button")
    relay.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    error = assert_failed(relay, ProtocolError, "bad-frame")
    assert "magic" in str(error)


# -- handshake timeout ---------------------------------------------------------


@pytest.mark.parametrize("state", [State.START, State.HELLO, State.CHALLENGE, State.AUTH])
def test_handshake_timeout_fails_the_connection(state):
    _, relay = _relay_in(state)
    assert relay.get_timer() == 10.0  # created at 0 with the default 10 s timeout
    assert relay.handle_timer(9.999) == b""
    assert relay.error is None and not relay.closed
    assert relay.next_event() is None

    assert relay.handle_timer(10.0) == b""
    error = assert_failed(relay, StateError, "timeout")
    assert "10 s" in str(error)
    # A timed-out connection can still tell the peer why.
    frame = relay.error_frame(error)
    assert b"timeout" in frame


def test_handshake_deadline_counts_from_creation_and_bytes_do_not_extend_it():
    button = new_button(now=100.0, handshake_timeout=3.0)
    relay = RelayConnection(role="button", now=100.0, handshake_timeout=5.0)
    assert button.get_timer() == 103.0
    assert relay.get_timer() == 105.0
    deliver(relay, button.hello(104.0), 104.0)
    deliver(button, relay.challenge(104.5, nonce=NONCE), 104.5)
    assert relay.get_timer() == 105.0
    assert button.get_timer() == 103.0
    button.handle_timer(104.5)
    assert_failed(button, StateError, "timeout")
    relay.handle_timer(105.0)
    assert_failed(relay, StateError, "timeout")


def test_completed_handshake_cancels_the_deadline():
    pair = button_pair(now=0.0)
    # Well past the handshake deadline, the timer is only about heartbeats.
    for conn in (pair.client, pair.relay):
        conn.handle_timer(9.0)
        assert conn.error is None and not conn.closed
        assert conn.get_timer() == 10.0  # DEFAULT_HEARTBEAT_INTERVAL after the welcome at 0


def test_console_handshake_with_explicit_handshake_helper():
    console = new_console(counter=7)
    relay = RelayConnection(role="console", heartbeat_interval=2.0, supervision_window=5.0)
    pair = handshake(console, relay, secret=CONSOLE_TOKEN, last_counter=6, now=3.0)
    assert pair.now == 3.0
    assert console.get_timer() == 5.0 and relay.get_timer() == 5.0


def test_a_refused_second_challenge_keeps_the_nonce_the_client_answers():
    button, relay = _relay_in(State.CHALLENGE)
    with pytest.raises(StateError):
        relay.challenge(0.0)  # e.g. a duplicated handler call
    deliver(relay, button.authenticate(0.0))
    relay.verify(BUTTON_SECRET)  # the proof over the first nonce still verifies
    assert relay.authenticated


def test_send_welcome_directly_cannot_skip_verify():
    button, relay = _relay_in(State.AUTH)
    with pytest.raises(StateError, match="verify"):
        relay.send(WELCOME)
    assert relay.state is State.AUTH and not relay.authenticated
    with pytest.raises(AuthenticationFailed):
        relay.verify(b"not the secret")
    with pytest.raises(StateError):
        relay.send(WELCOME)
