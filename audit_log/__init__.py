"""Tamper-evident audit log (Certificate Transparency style).

* :mod:`audit_log.canonical` - RFC 8785 canonical JSON: the bytes an entry is hashed and stored as.
* :mod:`audit_log.merkle` - RFC 9162 section 2.1 tree hashes, inclusion and consistency proofs.
* :mod:`audit_log.note` - C2SP signed notes (Ed25519), ``vkey`` keys, ``tlog-checkpoint`` bodies.
* :mod:`audit_log.store` - tables, one writer appending in the caller's transaction, checkpoints.
* :mod:`audit_log.log` - :class:`~audit_log.log.AuditLog`, the API the platform calls.
* :mod:`audit_log.actions` - the action names (recorded today, and reserved for coming features).
* :mod:`audit_log.export` - ``gbops audit export`` bundles.
* :mod:`audit_log.verify` - the offline checker; standard library + ``cryptography`` only, shares no
  code with the rest (an auditor runs it on its own: ``python verify.py BUNDLE --key verifier.key``).
"""
