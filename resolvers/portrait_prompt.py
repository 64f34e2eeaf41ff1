"""The seed's ``buildCharacterPortraitPrompt``: a character's fields as one image prompt.

Pure, so it is unit-tested on its own. Image models read the start of a
prompt most closely, so the subject comes first and the style last; the
long free-text fields are cut to fit ``MAX_PROMPT_LENGTH``, the bound every
job prompt obeys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_PROMPT_LENGTH = 2000
STYLE = "character portrait, head and shoulders, facing the viewer, detailed face, soft studio lighting, high quality"
_MAX_TAGS = 12
_ELLIPSIS = "..."


@dataclass(frozen=True, slots=True)
class PortraitSubject:
    name: str
    description: str
    appearance_tags: Sequence[str] = ()
    traits: str | None = None
    persona: str | None = None
    gender: str | None = None


def build_character_portrait_prompt(subject: PortraitSubject) -> str:
    """Subject, look, personality, style; never longer than MAX_PROMPT_LENGTH."""
    head = f"Portrait of {_one_line(subject.name)}"
    if subject.gender:
        head += f", {_one_line(subject.gender)}"
    parts = [head]
    tags = [_one_line(tag) for tag in subject.appearance_tags[:_MAX_TAGS] if tag.strip()]
    if tags:
        parts.append("Appearance: " + ", ".join(tags))
    if subject.traits:
        parts.append("Personality: " + _one_line(subject.traits))
    # The free text is long and least specific: it gets what room is left.
    fixed = ". ".join(parts) + ". " + STYLE
    room = MAX_PROMPT_LENGTH - len(fixed) - 4
    for text in (subject.description, subject.persona):
        if text and room > 40:
            snippet = _cut(_one_line(text).rstrip("."), room)
            parts.append(snippet)
            room -= len(snippet) + 2
    prompt = ". ".join(parts) + ". " + STYLE
    return prompt[:MAX_PROMPT_LENGTH]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - len(_ELLIPSIS)].rsplit(" ", 1)[0]
    return cut + _ELLIPSIS
