"""`localr1 worker` addresses ("host:port"), checked once for --rpc, config.toml's `rpc` and
the RPC backend alike, so that what the options accept is what llama.cpp's RPC client can reach.

llama.cpp's RPC client connects over IPv4 only (gethostbyname), so an IPv6 address, even in
brackets, is refused here with the rest. Pure Python: the bottom layer, below config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from localr1.errors import LocalR1Error
from localr1.terminal_text import visible_controls

DEFAULT_PORT = 50052  # llama.cpp rpc-server's

_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


class WorkerError(LocalR1Error):
    """An RPC worker that cannot be used: one line naming the worker and what happened."""


class WorkerBusyError(WorkerError):
    """A worker that took the connection but did not answer the hello in time: llama.cpp's RPC
    server serves one client at a time, so most likely alive and serving another one (or a
    listener that is no RPC worker); not down."""


def parse_endpoints(values: str | Iterable[str]) -> tuple[str, ...]:
    """"h:p,h:p" or a list of such strings as checked "host:port" endpoints, in order, each
    once; a one-line WorkerError for the first bad one."""
    items = [values] if isinstance(values, str) else list(values)
    endpoints: dict[str, None] = {}
    for item in items:
        for part in str(item).split(","):
            endpoints[_checked_endpoint(part.strip())] = None
    if not endpoints:
        raise WorkerError("no RPC worker given: expected HOST:PORT[,HOST:PORT...]")
    return tuple(endpoints)


def _checked_endpoint(text: str) -> str:
    shown = visible_controls(text)
    if not text:
        raise WorkerError("an empty RPC worker address: expected HOST:PORT[,HOST:PORT...]")
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]:")
        _check_port(shown, port if bracket else "")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise WorkerError(f"{shown}: not an IPv6 address in brackets") from None
        raise WorkerError(f"{shown}: llama.cpp's RPC connects over IPv4 only: use an IPv4 "
                          "address or a host name")
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise WorkerError(f"{shown}: expected HOST:PORT (like 127.0.0.1:{DEFAULT_PORT})")
    if ":" in host:
        raise WorkerError(f"{shown}: an IPv6 address goes in brackets, and llama.cpp's RPC "
                          "connects over IPv4 only: use an IPv4 address or a host name")
    if not _HOST_NAME.fullmatch(host):
        raise WorkerError(f"{shown}: {visible_controls(host)!r} is not a host name or an IPv4 "
                          "address")
    return f"{host}:{_check_port(shown, port)}"


def _check_port(shown: str, port: str) -> int:
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise WorkerError(f"{shown}: the port must be a number from 1 to 65535")
    return int(port)
