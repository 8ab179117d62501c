"""Durations and ages as people read them: "3m05s", "5 min ago"."""

from __future__ import annotations


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
    if seconds != seconds or seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h ago"
    return f"{hours // 24} days ago"
