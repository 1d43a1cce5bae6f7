"""Structured logs for the learned router: ``LODESTAR_LOG_FORMAT=json`` -> one JSON object per line.

Lodestar's loggers (``lodestar_vllm.*``) pass what happened as ``extra={"event": ...}`` (model swaps, fallbacks,
checkpoint refusals, guardrail trips, trainer restarts); this formatter puts those fields next to the message, so a
log pipeline can filter on ``event`` without parsing text. Only lodestar's own logger tree is touched: the host's
logging stays as the host configured it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "lodestar_vllm"
FORMAT_ENV = "LODESTAR_LOG_FORMAT"
LEVEL_ENV = "LODESTAR_LOG_LEVEL"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is structured data.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_lodestar_handler"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", **extra, "exc"?}``; values JSON cannot carry become strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, allow_nan=True)


def configure_logging(env: dict[str, str] | None = None, stream: TextIO | None = None) -> logging.Handler | None:
    """Attach a JSON handler to lodestar's logger when ``LODESTAR_LOG_FORMAT=json`` (idempotent).

    Returns the handler, or None when the format is ``text``/unset (the host's handlers then format our records).
    Raises ValueError on an unknown format or level, so a typo in a deployment is loud.
    """
    env = dict(os.environ) if env is None else env
    fmt = env.get(FORMAT_ENV, "text").strip().lower() or "text"
    if fmt not in ("text", "json"):
        raise ValueError(f"{FORMAT_ENV} must be 'text' or 'json', got {fmt!r}")
    logger = logging.getLogger(LOGGER_NAME)
    level = env.get(LEVEL_ENV, "").strip().upper()
    if level:
        if not isinstance(logging.getLevelName(level), int):
            raise ValueError(f"{LEVEL_ENV} must be a logging level name, got {level!r}")
        logger.setLevel(level)
    if fmt == "text":  # leave the logger alone: a JSON handler someone installed explicitly stays
        return None
    existing = [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]
    if existing:
        return existing[0]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False  # one line per event, not a JSON line plus the host's text copy
    return handler


def remove_json_handler() -> None:
    """Undo ``configure_logging`` (tests; switching a process back to the host's text logs)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    logger.propagate = True
