"""The ground floor: settings, database engine and base, logging, passwords, time, ids, periodic tasks.

Imports no domain package (an import-linter contract keeps it so).
"""
