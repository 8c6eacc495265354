"""Fault tickets and their SLA (issue 7): reports, repair feedback, automatic tickets, notifications."""
