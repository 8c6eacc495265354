"""Device control (PTZ, presets, tours, home, device commands) and alarms: routes."""
