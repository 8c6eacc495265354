"""Device control: PTZ with user priority, lock and restore, presets, preset tours, device commands."""
