"""Byte counts as people read them (decimal units, like download sizes and disk labels)."""


def format_bytes(n: int) -> str:
    """999 -> '999 bytes', 4_100_000_000 -> '4.1 GB'."""
    if n < 1000:
        return "1 byte" if n == 1 else f"{n} bytes"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
