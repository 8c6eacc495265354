"""Alarms and positions reported by devices: stored, searchable, acknowledged, fanned out live."""
