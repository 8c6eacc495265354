"""The portal fixtures (app on SQLite and PostgreSQL, users with roles) for the ticket route tests."""

from tests.portal.conftest import audited, cheap_argon2, fake_sip, portal, settings  # noqa: F401
