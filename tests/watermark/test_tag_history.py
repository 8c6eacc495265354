"""Issue 13: the session tag says what the viewer was given (live / playback / download) and the window of
history shown (version 3), signed with the rest; version 2 tags (issue 11) and version 1 tags still parse
and verify; the hub's plan puts the kind and window into the tag; ``gbops watermark inspect`` shows them in
Beijing time whatever the host's zone."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from media_relay.viewers import Viewer
from watermark.inspect import _kind_text, _window_text
from watermark.overlay import WatermarkSettings
from watermark.pipeline import WatermarkHub
from watermark.tag import (
    SESSION_TAG_UUID,
    SessionTag,
    TagError,
    encode_payload,
    find_tags,
    key_id_of,
    make_tag_nal,
    parse_payload,
    verify,
    window_seconds,
)

KEY = Ed25519PrivateKey.generate()
W = (1_772_326_800, 1_772_330_400)  # 2026-03-01 09:00 - 10:00 Beijing time
TAG = SessionTag(session_id="pb-0123456789abcdef", user_id=7, channel_id="34020000001310000001",
                 start_ms=1_790_000_000_000, device_id="34020000001320000001", kind="playback", window=W)


def _v2_payload(tag: SessionTag, key: Ed25519PrivateKey) -> bytes:
    """A version 2 payload exactly as written by issue 11 (device id, no kind, no window)."""
    body = (SESSION_TAG_UUID + struct.pack(">BB8sQQ", 2, 1, key_id_of(key), tag.start_ms, tag.user_id)
            + bytes([len(tag.session_id)]) + tag.session_id.encode()
            + bytes([len(tag.channel_id)]) + tag.channel_id.encode()
            + bytes([len(tag.device_id)]) + tag.device_id.encode())
    return body + key.sign(body)


@pytest.mark.parametrize("kind,window", [("live", None), ("playback", W), ("download", W), ("download", None)])
def test_version_3_carries_and_signs_kind_and_window(kind: str, window: tuple[int, int] | None) -> None:
    payload = encode_payload(replace(TAG, kind=kind, window=window), KEY)
    assert payload[16] == 3
    assert len(payload) == 126 + len(TAG.session_id) + len(TAG.channel_id) + len(TAG.device_id)
    tag, signed = parse_payload(payload)
    assert (tag.kind, tag.window, tag.version, tag.device_id) == (kind, window, 3, TAG.device_id)
    assert verify(tag, signed, KEY.public_key())


def test_a_changed_kind_or_window_breaks_the_signature() -> None:
    payload = encode_payload(TAG, KEY)
    at = len(payload) - 64 - 17  # kind byte, then two 8-byte times
    assert payload[at] == 2  # playback
    for forged in (payload[:at] + bytes([1]) + payload[at + 1 :],  # "live"
                   payload[:at + 1] + struct.pack(">Q", W[0] - 3600) + payload[at + 9 :],
                   payload[:at + 9] + struct.pack(">Q", W[1] + 3600) + payload[at + 17 :]):
        tag, signed = parse_payload(forged)
        assert (tag.kind, tag.window) != (TAG.kind, TAG.window)
        assert not verify(tag, signed, KEY.public_key())


def test_version_2_tags_still_parse_and_verify() -> None:
    payload = _v2_payload(TAG, KEY)
    tag, signed = parse_payload(payload)
    assert (tag.version, tag.kind, tag.window, tag.device_id, tag.session_id) == (2, "", None, TAG.device_id,
                                                                                  TAG.session_id)
    assert verify(tag, signed, KEY.public_key())
    # the same bytes are still written on request, never with a kind or a window
    assert encode_payload(replace(TAG, version=2, kind="live", window=None), KEY)[:-64] == payload[:-64]
    with pytest.raises(TagError):
        encode_payload(replace(TAG, version=2), KEY)
    # found in a stream like any other tag
    nal = b"\x00\x00\x00\x01" + make_tag_nal(replace(TAG, version=2, kind="", window=None), "h264", KEY)
    ((found, valid),) = find_tags(nal, "h264", KEY.public_key())
    assert valid and found.version == 2 and found.kind == ""
    # a version 2 payload read as version 3 is refused (too short), not misread
    with pytest.raises(TagError):
        parse_payload(payload[:16] + bytes([3]) + payload[17:])


def test_unknown_kind_is_refused_when_writing_and_shown_when_reading() -> None:
    with pytest.raises(TagError):
        encode_payload(replace(TAG, kind="export"), KEY)
    with pytest.raises(TagError):
        encode_payload(replace(TAG, window=(W[1], W[0])), KEY)
    payload = encode_payload(TAG, KEY)
    at = len(payload) - 64 - 17
    tag, _ = parse_payload(payload[:at] + bytes([9]) + payload[at + 1 :])
    assert tag.kind == "#9" and "#9" in _kind_text(tag.kind)


def test_window_seconds() -> None:
    start = datetime(2026, 3, 1, 9, 0, 0, 400_000, tzinfo=timezone(timedelta(hours=8)))
    end = start + timedelta(minutes=10)
    assert window_seconds((start, end)) == (int(start.timestamp()), int(start.timestamp()) + 601)
    assert window_seconds((start.astimezone(UTC), end.astimezone(UTC))) == window_seconds((start, end))
    assert window_seconds((1.0, 2.5)) == (1, 3) and window_seconds(None) is None
    with pytest.raises(TagError):
        window_seconds((start.replace(tzinfo=None), end))
    with pytest.raises(TagError):
        window_seconds((end, start))


def test_inspect_shows_the_window_in_beijing_time(monkeypatch: Any) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert _window_text(W) == "2026-03-01T09:00:00+08:00 ~ 2026-03-01T10:00:00+08:00 (3600 s)"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert _window_text(None) == "-"
    assert _kind_text("playback") == "回放 / playback" and _kind_text("live") == "直播 / live"
    assert "older" in _kind_text("")


def _hub() -> WatermarkHub:
    from dataclasses import replace as dc_replace

    return WatermarkHub(dc_replace(WatermarkSettings(), enabled=False), KEY, max_encoders=1)


def test_plan_puts_kind_and_window_into_the_tag() -> None:
    hub = _hub()
    hub.policy = type("Off", (), {"applies": staticmethod(lambda roles: False)})()  # tag only, no encoder
    viewer = Viewer(user_id=42, username="zhangsan", display_name="张三")
    start = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    plan = hub.plan(viewer, ("34020000001320000001", "34020000001310000001"), "sess-1", kind="playback",
                    window=(start, start + timedelta(hours=1)))
    assert (plan.tag.kind, plan.tag.window) == ("playback", W)
    assert (plan.tag.user_id, plan.tag.session_id, plan.tag.device_id) == (42, "sess-1", "34020000001320000001")
    live = hub.plan(viewer, ("34020000001320000001", "34020000001310000001"), "sess-2")
    assert (live.tag.kind, live.tag.window, live.tag.version) == ("live", None, 3)
    with pytest.raises(ValueError):
        hub.plan(viewer, ("d", "c"), "sess-3", kind="archive")
    with pytest.raises(ValueError):
        hub.plan(viewer, ("d", "c"), "sess-4", kind="playback", window=(start + timedelta(hours=1), start))
    # the tag NAL the hub makes from the plan carries them, signed
    nal = b"\x00\x00\x00\x01" + hub.tag_nal(plan.tag, "h265")
    ((found, valid),) = find_tags(nal, "h265", KEY.public_key())
    assert valid and (found.kind, found.window) == ("playback", W)


@given(st.binary(max_size=300), st.sampled_from([1, 2, 3, 4]))
def test_parse_never_raises_anything_but_tag_error(tail: bytes, version: int) -> None:
    payload = SESSION_TAG_UUID + bytes([version, 1]) + tail
    try:
        tag, signed = parse_payload(payload)
    except TagError:
        return
    assert tag.version == version and payload.startswith(signed)
    assert not verify(tag, signed, KEY.public_key())
