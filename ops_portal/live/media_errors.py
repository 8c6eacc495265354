"""A media relay's :class:`media_relay.stream.MediaError` as the API's error, for every route that opens media
(live, playback, downloads): one status per code, the device's SIP status (``sip_status``) when it refused."""

from __future__ import annotations

from ops_portal.schemas import ApiError

__all__ = ["MEDIA_ERRORS", "media_error"]

#: MediaError codes of playback and control -> HTTP status (unknown codes: 502).
MEDIA_ERRORS = {
    "device_offline": 409,
    "device_refused": 502,
    "no_media": 504,
    "no_keyframe": 504,
    "no_ports": 503,
    "bad_transport": 422,
    "bad_answer": 502,
    "stream_closed": 502,
    "start_failed": 502,
    "bad_window": 422,
    "window_too_long": 422,
    "no_recording": 404,
    "no_recordings": 503,
    "bad_source": 422,
    "bad_speed": 422,
    "bad_action": 422,
    "not_playback": 409,
    "bad_scale": 422,
    "bad_position": 422,
    "control_refused": 502,
    "no_session": 404,
    "no_sub_stream": 409,  # the device has no sub-stream identification set
    "bad_stream": 422,
    # the cluster (issue 17, gbops.cluster_media): no media node can take the stream, or it did not answer
    "no_media_node": 503,
    "media_node_unavailable": 503,
    "media_node_failed": 502,
    "media_remote": 503,
}


def media_error(exc: Exception) -> ApiError:
    """A :class:`media_relay.stream.MediaError` as the API's error: the status by code, the device's SIP
    status (``sip_status``) when it refused."""
    code = getattr(exc, "code", "media_error")
    status = MEDIA_ERRORS.get(code, 502)
    message = str(exc)
    extra = None
    if code == "device_refused":
        sip_status = getattr(exc, "status", None)
        message = f"设备拒绝 / the device refused{f' ({sip_status})' if sip_status else ''}: {exc}"
        extra = {"sip_status": sip_status} if sip_status else None
    return ApiError(status, code, message, extra=extra)
