"""Users, roles and logging in: the routes ``/api/auth``, ``/api/users``, ``/api/access/me``, ``/api/roles``,
``/api/permissions`` and their schemas (the accounts themselves: :mod:`ops_portal.users`, :mod:`ops_portal.auth`)."""
