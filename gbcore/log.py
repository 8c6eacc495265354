"""Structured log lines: ``ts level logger event key=value ...`` (or one JSON object per line).

Call sites pass an event name and keyword fields; secrets are never passed, and any field whose name
looks like a secret is masked as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SECRET_WORDS = ("password", "secret", "token", "authorization", "nonce_secret", "ha1")


def _clean(key: str, value: Any) -> Any:
    if any(word in key.lower() for word in _SECRET_WORDS):
        return "***"
    return value


def _fmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KvFormatter(logging.Formatter):
    def __init__(self, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields: dict[str, Any] = getattr(record, "kv", {}) or {}
        fields = {k: _clean(k, v) for k, v in fields.items()}
        if self.json_lines:
            obj = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
            obj.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v) for k, v in fields.items()})
            if record.exc_info:
                obj["exc"] = self.formatException(record.exc_info)
            return json.dumps(obj, ensure_ascii=False)
        parts = [ts, record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{k}={_fmt_value(v)}" for k, v in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Logger:
    """A thin wrapper: ``log.info("device.registered", device_id=..., addr=...)``."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, kv: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={"kv": kv}, exc_info=exc_info)

    def debug(self, event: str, **kv: Any) -> None:
        self._log(logging.DEBUG, event, kv)

    def info(self, event: str, **kv: Any) -> None:
        self._log(logging.INFO, event, kv)

    def warning(self, event: str, **kv: Any) -> None:
        self._log(logging.WARNING, event, kv)

    def error(self, event: str, **kv: Any) -> None:
        self._log(logging.ERROR, event, kv)

    def exception(self, event: str, **kv: Any) -> None:
        self._log(logging.ERROR, event, kv, exc_info=True)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - mirrors logging
        return self._logger.isEnabledFor(level)


def get_logger(name: str) -> Logger:
    return Logger(name)


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KvFormatter(json_lines=json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiosqlite", "asyncio", "uvicorn.access", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").setLevel(level.upper())  # "Running upgrade ..." lines
