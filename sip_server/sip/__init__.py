"""Sans-IO SIP core (RFC 3261): message codec, digest authentication, transactions and timers.

Nothing in this package imports asyncio, socket, threading or time; callers pass ``now``. The asyncio
adapter is :mod:`sip_server.transport`.
"""

from .digest import (
    AuthResult,
    DigestAuthenticator,
    build_authorization,
    compute_ha1,
    digest_response,
    parse_auth_params,
)
from .endpoint import (
    AckTimeout,
    MessageDropped,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    TransactionTimeout,
)
from .message import (
    REASON_PHRASES,
    Headers,
    NameAddr,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    StreamFramer,
    Via,
    header_param,
    make_cancel,
    make_response,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from .transaction import TIMERS, TimerSpec, TimerValues, new_branch

__all__ = [
    "AckTimeout",
    "AuthResult",
    "DigestAuthenticator",
    "Headers",
    "MessageDropped",
    "NameAddr",
    "Outgoing",
    "REASON_PHRASES",
    "RequestReceived",
    "ResponseReceived",
    "SipEndpoint",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "StreamFramer",
    "TIMERS",
    "TimerSpec",
    "TimerValues",
    "TransactionTimeout",
    "Via",
    "build_authorization",
    "compute_ha1",
    "digest_response",
    "header_param",
    "make_cancel",
    "make_response",
    "new_branch",
    "new_tag",
    "parse_auth_params",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
]
