"""Data files shipped with the platform (the local device advisory list)."""
