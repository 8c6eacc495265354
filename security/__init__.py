"""Security monitoring (issue 16): the security event stream, its rules and alerts, address blocks, and the
security self-check.  A domain package: it imports the ground only; producers reach it through
:class:`security.events.SecuritySink`."""
