"""Devices, channels, the organisation tree, the map list and the SIP counters: routes and schemas."""
