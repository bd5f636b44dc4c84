"""Structured logging: JSON lines for machines, a readable console when a person is watching.

docker-py, urllib3 and APScheduler log through the stdlib; they are routed through the same processors
and renderer, so a log consumer sees one schema. A masking processor is the last line of defence for
secrets: the registry module never puts one in a message, but a library might.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|auth|credential", re.IGNORECASE)
_SECRET_TEXT = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (
        re.compile(
            r"(?i)(\"?(?:password|secret|token|access_token|identitytoken)\"?\s*[:=]\s*\"?)[^\s\",}]+"
        ),
        r"\1***",
    ),
    # A JWT (header.payload.signature, the header starting {" in base64url) wherever it appears: registry
    # tokens and many secret stores' leases have this shape.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "***jwt***"),
    (re.compile(r"//[^/@\s:]+:[^/@\s]+@"), "//***:***@"),
]


def mask_text(text: str) -> str:
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def mask_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    for key, value in list(event_dict.items()):
        if key != "event" and _SECRET_KEYS.search(key) and value is not None:
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = mask_text(value)
    return event_dict


def configure(stream: TextIO | None = None, level: int = logging.INFO, json: bool | None = None) -> None:
    """Send every log record, ours and the libraries', to `stream` through one renderer."""
    stream = stream or sys.stdout
    use_json = json if json is not None else not stream.isatty()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs every connection at DEBUG and APScheduler every job at INFO; keep their warnings only.
    # Apprise logs each delivery at INFO; its warnings say why one failed (its URLs masked by it and by us).
    for noisy in ("urllib3", "docker", "apscheduler", "apprise"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
