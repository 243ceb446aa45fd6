"""Logging: plain or JSON lines, each carrying the request id of the request being served."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# A caller's id goes into every log line and back out as a header: only short plain tokens
# (a 3 KB or a quoted value would bloat and forge log lines).
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_for(header: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is 1-64 of ``[A-Za-z0-9._-]``, else a new one."""
    if header is not None and _CALLER_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex[:16]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def setup_logging(level: str = "INFO", json_logs: bool = False) -> None:
    root = logging.getLogger()
    if getattr(root, "_repic_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level.upper())
    root._repic_configured = True  # type: ignore[attr-defined]
