"""``/api/audit``: the audit log as the console shows it."""
