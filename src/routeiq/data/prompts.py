"""The text a router sees: the last user turn of a prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Prompt = str | list[dict[str, Any]]  # plain text or OpenAI chat messages


class PromptError(ValueError):
    """A prompt that has no routable text (empty, no user turn, wrong types)."""


def prompt_text(prompt: Prompt) -> str:
    """Return the routing text of ``prompt``.

    A string is returned unchanged. A list of OpenAI chat messages yields its last ``user``
    message: string content as is, or the ``text`` parts of a content list joined by newlines
    (``image_url``, ``input_audio`` and other non-text parts are ignored).

    Raises :class:`PromptError` when there is no non-whitespace text to route on.
    """
    if isinstance(prompt, str):
        return _nonblank(prompt, "prompt")
    if not isinstance(prompt, list | tuple):
        raise PromptError(
            f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}"
        )
    if not prompt:
        raise PromptError("prompt is an empty message list")
    for index in range(len(prompt) - 1, -1, -1):
        message = prompt[index]
        if not isinstance(message, Mapping):
            raise PromptError(f"message {index} must be a dict, got {type(message).__name__}")
        if message.get("role") == "user":
            return _content_text(message.get("content"), index)
    raise PromptError(f"no user message among {len(prompt)} messages")


def request_text(messages: Any = None, input: Any = None) -> str:
    """The routing text of an API request: chat ``messages``, else a text ``input``
    (completions, or a list of strings); :class:`PromptError` when there is none (only
    images or audio, no user turn, token ids, an empty request)."""
    if messages is not None:
        return prompt_text(list(messages) if isinstance(messages, tuple) else messages)
    if isinstance(input, str):
        return prompt_text(input)
    if isinstance(input, list) and input and all(isinstance(x, str) for x in input):
        return prompt_text("\n".join(input))
    raise PromptError("the request has no chat messages or text input to route on")


def opening_text(messages: Any) -> str | None:
    """A conversation's opening user turn, when ``messages`` hold more than one user turn
    (else None: nothing to stay with). Its text, as :func:`prompt_text` reads a turn."""
    if not isinstance(messages, list | tuple):
        return None
    users = [
        i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"
    ]
    if len(users) < 2:
        return None
    try:
        return _content_text(messages[users[0]].get("content"), users[0])
    except PromptError:
        return None


def _content_text(content: Any, index: int) -> str:
    where = f"user message {index}"
    if isinstance(content, str):
        return _nonblank(content, where)
    if not isinstance(content, list | tuple):
        raise PromptError(
            f"{where}: content must be a string or a list of parts, got {type(content).__name__}"
        )
    texts = []
    for k, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise PromptError(f"{where}: part {k} must be a dict, got {type(part).__name__}")
        if part.get("type") == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise PromptError(f"{where}: part {k} has type 'text' but no string 'text'")
            texts.append(text)
    if not texts:
        raise PromptError(f"{where} has no text parts (only {len(content)} non-text parts)")
    return _nonblank("\n".join(texts), where)


def _nonblank(text: str, where: str) -> str:
    if not text or text.isspace():
        raise PromptError(f"{where} is empty or whitespace only")
    return text
