"""The data contract: every source format becomes one of these record types (TRL's taxonomy).

Records are plain dataclasses so that converters stay pure functions and tests compare them with `==`.
`source` is "file:row" (1-based row) so that any later error can still name where the row came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    role: str  # one of ROLES
    content: str
    # An assistant turn's own say on whether it is trained (LLaMA-Factory's `loss_weight`, ms-swift's `loss`);
    # None is the default: assistant replies train, everything else is context.
    train: bool | None = None


@dataclass
class ChatExample:
    """A conversation for SFT: alternating user/assistant turns (tool turns allowed), optional system/tools."""

    messages: list[Message]
    system: str | None = None
    tools: str | None = None  # JSON text of tool definitions, passed to the chat template as-is
    source: str = ""


@dataclass
class TextExample:
    """Plain text for continued pre-training: every token is a label."""

    text: str
    source: str = ""


@dataclass
class PreferenceExample:
    """A prompt conversation (ending with a user turn) with a preferred and a dispreferred reply."""

    prompt: list[Message]
    chosen: str
    rejected: str
    system: str | None = None
    source: str = ""


@dataclass
class KTOExample:
    """An unpaired completion marked desirable (True) or undesirable (False)."""

    prompt: list[Message]
    completion: str
    label: bool
    system: str | None = None
    source: str = ""


@dataclass
class ClsExample:
    """A text (or text pair) with a class index, a class name or a regression target."""

    text: str
    label: int | float | str
    text_pair: str | None = None
    source: str = ""


@dataclass
class EmbeddingExample:
    """Two texts with an optional similarity label (None means anchor/positive for in-batch negatives)."""

    anchor: str
    positive: str
    label: float | None = None
    negatives: list[str] = field(default_factory=list)
    source: str = ""


Record = ChatExample | TextExample | PreferenceExample | KTOExample | ClsExample | EmbeddingExample
