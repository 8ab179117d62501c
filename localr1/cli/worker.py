"""`localr1 worker`: this machine's backend (CPU, CUDA, Metal) served to a localr1 on another
machine through llama.cpp's RPC backend (the client side is `--rpc`)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import click

from localr1.cli.params import setting_check
from localr1.engine.rpc_backend import DEFAULT_PORT, serve_worker, serving_devices
from localr1.terminal_text import safe_echo


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="IPv4 address to listen on; one other machines can reach needs "
                   "--allow-remote.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", type=click.IntRange(min=1), callback=setting_check("threads"),
              help="CPU threads (default: one per physical core).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the large tensors clients send in this folder, so the next load "
                   "sends only their hashes (default: no cache). Delete it if the worker was "
                   "killed or the disk filled while it wrote.")
@click.option("--allow-remote", is_flag=True,
              help="Listen on a --host other machines can reach: the RPC protocol has no "
                   "authentication or encryption (prefer an SSH tunnel).")
def worker(host: str, port: int, threads: int | None, cache_dir: Path | None,
           allow_remote: bool) -> None:
    """Serve this machine's backend to `localr1 run/chat/batch/serve --rpc HOST:PORT` on
    another machine, which puts part of a model's layers here. Ctrl+C stops.

    \b
      localr1 worker                      # on the second machine, then over SSH:
      ssh -N -L 50052:127.0.0.1:50052 user@second-machine
      localr1 run --rpc 127.0.0.1:50052 -m r1:70b "hi"
    """
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise click.BadParameter("use an IPv4 address (llama.cpp's RPC server listens on IPv4 "
                                 "only)", param_hint="--host") from None
    if not address.is_loopback and not allow_remote:
        raise click.UsageError(f"--host {host} lets other machines reach this worker, and the "
                               "RPC protocol has no authentication or encryption: add "
                               "--allow-remote to accept that, or keep 127.0.0.1 and tunnel "
                               "over SSH")
    from localr1.models.hardware import default_threads
    from localr1.sizes import format_bytes

    devices = serving_devices()  # a build without RPC: one line, before any warning
    if not address.is_loopback:
        _remote_warning(host, port)
    served = ", ".join(f"{device.name} ({format_bytes(device.free_bytes)} free)"
                       for device in devices)
    try:
        serve_worker(str(address), port, threads=threads or default_threads(),
                     cache_dir=cache_dir,
                     on_listening=lambda: safe_echo(
                         f"worker: serving {served} on {address}:{port}; Ctrl+C stops",
                         err=True))
    except KeyboardInterrupt:
        # The server thread may be inside llama.cpp computing for a client: the interpreter's
        # normal exit would tear down what it uses (SIGSEGV). End the process here instead,
        # with what main() prints for a Ctrl+C (click's line end, then ours).
        safe_echo("", err=True)
        safe_echo("localr1: interrupted", err=True)
        sys.stderr.flush()
        os._exit(130)


def _remote_warning(host: str, port: int) -> None:
    for line in (
        f"warning: listening on {host}:{port}. llama.cpp's RPC protocol has no authentication "
        "and no encryption: anyone who can reach this port can run code on this machine's "
        "backend and read or write its memory.",
        "Safer: keep the worker on 127.0.0.1 and tunnel from the other machine:",
        f"  ssh -N -L {port}:127.0.0.1:{port} user@this-machine",
        f"  localr1 run --rpc 127.0.0.1:{port} ...",
    ):
        safe_echo(line, err=True)
