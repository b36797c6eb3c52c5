"""Errors that a user sees. Each says what was received, what was expected and how to fix it."""

from __future__ import annotations


class TemperError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")


class ConfigError(TemperError):
    """A bad key or value in a YAML file or on the command line; `key` names the field (the board shows the
    message next to it)."""

    def __init__(self, message: str, hint: str | None = None, key: str | None = None) -> None:
        self.key = key
        super().__init__(message, hint=hint)


class DataError(TemperError):
    """Problems found in data files; `problems` holds every `file:row:field: message` line."""

    def __init__(self, message: str, problems: list[str] | None = None, hint: str | None = None) -> None:
        self.problems = problems or []
        shown = "\n".join(f"  {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        full = f"{message}\n{shown}{more}" if self.problems else message
        super().__init__(full, hint=hint)


class ModelNotFoundError(TemperError):
    """A model name that is neither an alias, an HF directory, a GGUF file nor a run directory."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), to quote inside our own errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
