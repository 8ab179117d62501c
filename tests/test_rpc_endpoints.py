"""`--rpc` and config's `rpc` addresses (localr1/rpc_endpoints.py, re-exported by the RPC
backend): HOST:PORT, in order, each once; what llama.cpp's RPC client cannot reach is refused in
one line. Pure parsing: no worker, no llama.cpp."""

from __future__ import annotations

import pytest

from localr1.rpc_endpoints import WorkerError, parse_endpoints


@pytest.mark.parametrize("given, expected", [
    ("127.0.0.1:50052", ("127.0.0.1:50052",)),
    (" gpu-box.local:50052 , 10.0.0.2:1,gpu-box.local:50052", ("gpu-box.local:50052",
                                                               "10.0.0.2:1")),
    (["a:1,b:2", "c:65535"], ("a:1", "b:2", "c:65535")),
    ("host:0050052", ("host:50052",)),
])
def test_endpoints_are_parsed_in_order_each_once(given, expected):
    assert parse_endpoints(given) == expected


@pytest.mark.parametrize("given, message", [
    ("127.0.0.1", "127.0.0.1: expected HOST:PORT (like 127.0.0.1:50052)"),
    (":50052", ":50052: expected HOST:PORT (like 127.0.0.1:50052)"),
    ("a:1,,b:2", "an empty RPC worker address: expected HOST:PORT[,HOST:PORT...]"),
    ([], "no RPC worker given: expected HOST:PORT[,HOST:PORT...]"),
    ("h:0", "h:0: the port must be a number from 1 to 65535"),
    ("h:65536", "h:65536: the port must be a number from 1 to 65535"),
    ("h:5e4", "h:5e4: the port must be a number from 1 to 65535"),
    ("h:\u0665", "h:\u0665: the port must be a number from 1 to 65535"),
    ("bad_host!:1", "bad_host!:1: 'bad_host!' is not a host name or an IPv4 address"),
    ("evil\x1b[2J:1", "evil\\x1b[2J:1: 'evil\\\\x1b[2J' is not a host name or an IPv4 address"),
    ("::1:50052", "::1:50052: an IPv6 address goes in brackets, and llama.cpp's RPC connects "
                  "over IPv4 only: use an IPv4 address or a host name"),
    ("[::1]:50052", "[::1]:50052: llama.cpp's RPC connects over IPv4 only: use an IPv4 "
                    "address or a host name"),
    ("[::1]", "[::1]: the port must be a number from 1 to 65535"),
    ("[nope]:1", "[nope]:1: not an IPv6 address in brackets"),
])
def test_bad_endpoints_are_one_line(given, message):
    with pytest.raises(WorkerError) as caught:
        parse_endpoints(given)
    assert str(caught.value) == message
    assert "\n" not in message
