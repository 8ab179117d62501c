"""Durations and ages as people read them, one style for the CLI and the TUI.

Three shapes, each for one kind of figure: `format_seconds` for short timings where tenths
matter ("12.3 s": thinking, time to first token), `format_duration` for longer spans where
they do not ("3m05s": a download's time, its ETA), and `format_age` for how long ago something
happened ("5 min ago": a model's last use).
"""

from __future__ import annotations


def format_seconds(seconds: float) -> str:
    """A short timing to a tenth: 12.34 -> "12.3 s"; under 0.05 s -> "<0.1 s"."""
    return "<0.1 s" if seconds < 0.05 else f"{seconds:.1f} s"


def format_duration(seconds: float) -> str:
    """A length of time, compact: "42s", "3m05s", "2h07m"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_age(seconds: float) -> str:
    """How long ago something happened: "just now", "5 min ago", "3 h ago", "2 days ago"."""
    if seconds != seconds or seconds < 60:  # NaN (a clock gone backwards) reads as now
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h ago"
    return f"{hours // 24} days ago"
