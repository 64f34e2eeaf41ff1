"""pipeline/providers/logs.py: a percent from the last tqdm-style line of a provider's logs, and the last line as
a bounded, cleaned message, whatever the text."""

from __future__ import annotations

import time

import pytest

from pipeline.providers.logs import MESSAGE_LIMIT, TAIL_CHARS, LogSummary, summarize

SDXL_BAR = " 48%|████▊     | 24/50 [00:03<00:03,  7.60it/s]"


def test_an_sdxl_bar_gives_its_percent_and_its_line() -> None:
    """Given SDXL's logs (its seed, then a tqdm bar), when summarized, then the percent is the bar's and the
    message the bar's line, its whitespace runs made one."""
    logs = f"Using seed: 4242\nPrompt: a lighthouse\n{SDXL_BAR}"

    assert summarize(logs) == LogSummary(48, "48%|████▊ | 24/50 [00:03<00:03, 7.60it/s]")


def test_bars_redrawn_with_carriage_returns_give_the_last_one() -> None:
    """Given a bar redrawn over itself with carriage returns (tqdm's way), when summarized, then the last
    drawing counts, not the first."""
    logs = "Using seed: 1\n" + "".join(f"\r{p:3d}%|{'█' * (p // 10):<10}| {p // 2}/50" for p in (0, 20, 40, 60))

    summary = summarize(logs)

    assert summary.percent == 60 and summary.message == "60%|██████ | 30/50"


def test_a_line_after_the_bar_is_the_message_and_the_bar_still_gives_the_percent() -> None:
    """Given a finished bar followed by a plain line, when summarized, then the percent comes from the bar and
    the message is the plain line."""
    logs = f"{SDXL_BAR}\r100%|██████████| 50/50 [00:06<00:00,  7.61it/s]\nSaving output image\n\n  \n"

    assert summarize(logs) == LogSummary(100, "Saving output image")


def test_a_bar_without_a_percent_uses_its_count() -> None:
    """Given a tqdm-style line with only "| n/total" (a percent-less bar format), when summarized, then the
    percent is n/total, rounded down."""
    assert summarize("sampling | 7/9 [00:01<00:00]").percent == 77


@pytest.mark.parametrize(
    "logs",
    [
        None, 42, ["48%|"], {"logs": "x"}, "", "\n\r\n", "   \t  ",
    ],
)
def test_no_text_gives_nothing(logs: object) -> None:
    """Given logs that are not text, or only blank lines, when summarized, then neither percent nor message."""
    assert summarize(logs) == LogSummary(None, None)


@pytest.mark.parametrize(
    ("logs", "percent"),
    [
        ("loading weights 100% done", None),  # a percent that is not a bar
        ("450%|█████| 9/2", None),  # out of bounds, and a count past its total
        ("1.5%| of the disk", None),  # a decimal is no tqdm percent
        ("0/0 |", None),
        ("| 3/0", None),
        ("99999999999%|", None),
        ("-5%|", 5),  # the sign is no part of tqdm's number; 5 is what the bar says
    ],
)
def test_garbage_gives_no_percent_or_only_one_in_bounds(logs: str, percent: int | None) -> None:
    """Given lines that look like bars but are not, or say impossible things, when summarized, then the percent
    is None (or, at worst, a number the bar shows, always 0 to 100)."""
    summary = summarize(logs)

    assert summary.percent == percent
    assert summary.message is not None and summary.message == summary.message.strip()


def test_control_characters_and_escapes_are_stripped() -> None:
    """Given a line with ANSI colour codes, a NUL, a bell, a bidi override and a zero-width space, when
    summarized, then the message keeps only the visible text."""
    logs = "\x1b[32mdone\x1b[0m\x00 step\x07 \u202eevil\u200b 3\x1b[2K"

    assert summarize(logs).message == "done step evil 3"


def test_a_long_line_is_cut_to_the_limit() -> None:
    """Given a last line of 10 000 characters, when summarized, then the message is MESSAGE_LIMIT characters,
    ending with an ellipsis."""
    message = summarize("x" * 10_000).message

    assert message is not None and len(message) == MESSAGE_LIMIT and message.endswith("…")


def test_huge_logs_cost_only_their_tail() -> None:
    """Given 50 MB of logs ending in a bar, and 50 MB with no line break at all, when summarized, then the bar
    is found, only the last TAIL_CHARS are read (a bar before them is not), and each takes well under 50 ms."""
    bar_then_noise = "10%|█ | 5/50\n" + "noise " * (TAIL_CHARS // 6 + 1)
    huge = "a" * 50_000_000 + f"\n{SDXL_BAR}"
    one_line = "%|" * 25_000_000

    started = time.perf_counter()
    first = summarize(huge)
    second = summarize(one_line)
    elapsed = time.perf_counter() - started

    assert first.percent == 48
    assert second.percent is None and second.message is not None and len(second.message) == MESSAGE_LIMIT
    assert summarize(bar_then_noise).percent is None
    assert elapsed < 0.1, elapsed
