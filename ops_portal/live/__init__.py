"""Watching: live view, history (records, recording plans, playback), downloads, output URL binding and the
view/playback evidence on the audit log."""
