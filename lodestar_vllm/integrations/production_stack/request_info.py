"""An OpenAI-style request body -> RequestInfo (what the policy may know before choosing an engine)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Cap on the prompt text we hand to the policy: prefix features only look at the beginning, and a bound keeps
# the request path's cost independent of giant prompts.
MAX_PROMPT_CHARS = 1 << 20


def parse_body(body: bytes | None) -> dict[str, Any]:
    """The JSON object in ``body``, or {} for anything else (the host itself rejects bad bodies with a 400)."""
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def prompt_text(body: Mapping[str, Any]) -> str:
    """The text the engine will tokenize, in order: ``prompt`` for completions, message contents for chat."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt[:MAX_PROMPT_CHARS]
    if isinstance(prompt, list):
        return "".join(p for p in prompt if isinstance(p, str))[:MAX_PROMPT_CHARS]
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    # Role-tagged turns, like a chat template renders them: the router never sees the engine's template, but
    # turn boundaries and roles belong to the prefix (two chats with equal contents in different roles differ).
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        parts.append(f"<|{message.get('role', 'user')}|>\n{content if isinstance(content, str) else ''}\n")
    return "".join(parts)[:MAX_PROMPT_CHARS]


def max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
