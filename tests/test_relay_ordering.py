"""Cursor order to consoles, and the relay's in-memory view of alerts, without I/O."""

from __future__ import annotations

from pinkrelay.alerts.index import AlertIndex
from pinkrelay.protocol import Alert
from pinkrelay.relay.sequencer import CursorSequencer


def test_events_leave_in_cursor_order_whatever_order_they_settle_in():
    sent = []
    sequencer = CursorSequencer(10, sent.append)
    sequencer.release(12, "c", now=0.0)
    sequencer.release(11, None, now=0.0)  # a request that failed: nothing to send
    assert sent == []
    sequencer.release(10, "a", now=0.1)
    assert sent == ["a", "c"]
    sequencer.release(13, "d", now=0.2)
    assert sent == ["a", "c", "d"] and sequencer.waiting == 0


def test_a_cursor_never_settled_is_skipped_after_max_wait():
    sent = []
    sequencer = CursorSequencer(1, sent.append, max_wait=1.0)
    sequencer.release(2, "b", now=5.0)
    sequencer.release(3, "c", now=5.1)
    sequencer.tick(5.9)
    assert sent == []
    sequencer.tick(6.0)
    assert sent == ["b", "c"] and sequencer.skipped == 1
    sequencer.release(1, "late", now=7.0)  # settles after it was skipped: still shown
    assert sent == ["b", "c", "late"]


def _press(alert_id, button="kp-1", at=1_000_000, kind="panic"):
    return Alert(alert_id=alert_id, pressed_at=at, received_at=at, button=button, kind=kind)


def test_index_decides_new_presses_and_duplicates_like_the_journal():
    index = AlertIndex(merge_window_us=120_000_000)
    first = index.decide(_press("a1"), cursor=5)
    assert (first.state, first.cursor, first.duplicate_of) == ("raised", 5, "")
    index.remember(first)
    again = index.decide(_press("a2", at=60_000_000), cursor=6)
    assert (again.state, again.duplicate_of) == ("duplicate", "a1")
    index.remember(again)
    later = index.decide(_press("a3", at=200_000_000), cursor=7)
    assert later.state == "raised", "outside the merge window it is a new incident"
    other = index.decide(_press("b1", button="kp-2", at=60_000_000), cursor=8)
    assert other.state == "raised"
    index.state_changed("a1", "resolved")
    assert index.decide(_press("a4", at=70_000_000), cursor=9).state == "raised"
    assert index.get("a2").duplicate_of == "a1"
    index.forget("a2")
    assert index.get("a2") is None


def test_index_forgets_the_oldest_ids_first():
    index = AlertIndex(merge_window_us=0, max_ids=3)
    for number in range(5):
        index.remember(index.decide(_press(f"a{number}", button=f"kp-{number}"), cursor=number + 1))
    assert [index.get(f"a{n}") is not None for n in range(5)] == [False, False, True, True, True]
