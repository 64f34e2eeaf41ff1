"""What a provider's log text says about progress: a percent from its last progress bar, and its last line.

Replicate's ``logs`` is the model's own output, growing with each poll; SDXL's
holds tqdm bars redrawn with carriage returns, e.g.
`` 48%|████▊     | 24/50 [00:03<00:03,  7.60it/s]``. The text is
provider-controlled, so only its last ``TAIL_CHARS`` are read (the work per
poll is bounded however long the logs grow) and the message shown to clients
is stripped of control characters and cut to ``MESSAGE_LIMIT``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Only the end of the logs matters (the last bar, the last line); a huge log costs no more than this.
TAIL_CHARS = 4096
MESSAGE_LIMIT = 200
# A tqdm line: "NN%|bar|" (the percent tqdm prints, 0 to 100), optionally "n/total" after it.
TQDM_PERCENT = re.compile(r"(?<![\d.])(\d{1,3})%\|")
TQDM_COUNT = re.compile(r"\|\s*(\d{1,9})/(\d{1,9})\b")
LINE_BREAKS = re.compile(r"\r\n|\r|\n")
# Terminal colour and cursor codes some models print (CSI sequences, and two-character escapes).
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


@dataclass(frozen=True, slots=True)
class LogSummary:
    """``percent``: 0 to 100 from the last progress-bar line, else None; ``message``: the last non-empty line,
    cleaned, else None."""

    percent: int | None = None
    message: str | None = None


def summarize(logs: object) -> LogSummary:
    """The progress a provider's log text shows; anything that is not text shows none."""
    if not isinstance(logs, str) or not logs:
        return LogSummary()
    lines = [clean(line) for line in LINE_BREAKS.split(logs[-TAIL_CHARS:])]
    lines = [line for line in lines if line]
    percent = None
    for line in reversed(lines):
        percent = bar_percent(line)
        if percent is not None:
            break
    message = lines[-1] if lines else None
    return LogSummary(percent=percent, message=message)


def bar_percent(line: str) -> int | None:
    """The percent of a tqdm-style line (its "NN%|" or, failing that, its "| n/total"), None if it is not one."""
    found = TQDM_PERCENT.findall(line)
    if found:
        value = int(found[-1])
        return value if value <= 100 else None
    count = TQDM_COUNT.search(line)
    if count is not None:
        done, total = int(count[1]), int(count[2])
        if total > 0 and done <= total:
            return done * 100 // total
    return None


def clean(line: str) -> str:
    """``line`` without control or format characters (ANSI escapes' ESC among them, their "[..m" rest too),
    whitespace runs made one space, at most MESSAGE_LIMIT characters."""
    line = ANSI_ESCAPE.sub("", line)
    kept = "".join(" " if char.isspace() else char for char in line if not _is_control(char))
    text = " ".join(kept.split())
    return text if len(text) <= MESSAGE_LIMIT else f"{text[: MESSAGE_LIMIT - 1]}…"



def _is_control(char: str) -> bool:
    # Cc (controls), Cf (format: bidi overrides, zero-width), Cs/Co/Cn (surrogates, private use, unassigned).
    return not char.isspace() and unicodedata.category(char).startswith("C")
