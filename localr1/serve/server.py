"""Putting the server together: the first model loaded, the scheduler started, the app served by
uvicorn. `Server` is what `localr1 serve` runs in its main thread and the tests in a thread."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from localr1.config import Settings
from localr1.engine.events import GenerationParams
from localr1.engine.llama_engine import EngineConfig
from localr1.engine.model_process import load_engine
from localr1.errors import LocalR1Error
from localr1.models.choice import ChosenModel
from localr1.models.decode_options import LOOKUP
from localr1.paths import AppPaths
from localr1.serve.app import ServeState, create_app
from localr1.serve.chat_log import ChatLog
from localr1.serve.model_names import ModelNames, same_file
from localr1.serve.responses import ReasoningFormat
from localr1.serve.scheduler import DecoderShape, Scheduler, ServedEngine

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# The engine's own context is unused (requests decode in the parallel decoder's): keep it small.
_ENGINE_CONTEXT = 2048


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 4
    n_ctx_per_sequence: int = 8192
    threads: int = 0  # 0: the engine's (measured free cores)
    gpu_layers: int | str | None = None
    chat_format: str | None = None  # for the first model only: it names that file's format
    api_key: str | None = None
    log: bool = False
    allow_swap: bool = True
    reasoning_format: ReasoningFormat = "both"
    max_body_bytes: int = 4 << 20
    # EngineConfig.draft: a draft GGUF pairs with the first model only (another model may not
    # share its vocabulary); "lookup" needs no second model and drafts for every model.
    draft: Path | str | None = None


def default_parallel() -> int:
    """--parallel's default: a CPU decodes a few sequences at once for about the price of one
    (it waits on memory); a GPU has room for more."""
    from localr1.models.hardware import backend_info

    return 8 if backend_info().can_offload else 4


def exposed_without_key(options: ServeOptions) -> bool:
    """Listening beyond this machine with no --api-key: worth a warning."""
    return options.host not in LOCAL_HOSTS and options.api_key is None


class Server:
    def __init__(self, first: ChosenModel, settings: Settings, paths: AppPaths,
                 options: ServeOptions) -> None:
        self.options = options

        def load(chosen: ChosenModel) -> ServedEngine:
            first_model = same_file(chosen.path, first.path)
            chat_format = options.chat_format if first_model else None
            draft = options.draft if first_model or options.draft == LOOKUP else None
            # With RPC workers, in a child process: a lost worker ends it, not the server.
            return load_engine(EngineConfig.from_settings(
                chosen.path, settings, context_size=_ENGINE_CONTEXT,
                gpu_layers=options.gpu_layers, threads=options.threads,
                chat_format=chat_format, draft=draft))

        shape = DecoderShape(options.parallel, options.n_ctx_per_sequence, options.threads)
        self.scheduler = Scheduler(load, first, shape, allow_swap=options.allow_swap)
        chat_log = None
        if options.log:
            from localr1.store import Store

            chat_log = ChatLog(Store.open(paths.db_path))
        self.state = ServeState(
            scheduler=self.scheduler, names=ModelNames(paths.models_dir, first),
            defaults=GenerationParams.from_settings(settings),
            reasoning_format=options.reasoning_format, api_key=options.api_key,
            max_body_bytes=options.max_body_bytes, chat_log=chat_log)
        config = uvicorn.Config(create_app(self.state), host=options.host, port=options.port,
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        self._uvicorn = _Uvicorn(config, self.scheduler)
        self._socket: socket.socket | None = None

    def start_model(self) -> None:
        """Take the port, then load the first model (either error, one line, raised here):
        a busy port is found before a long load, not after."""
        if self._socket is None:
            self._socket = _listen(self.options.host, self.options.port)
        self.scheduler.start()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose for --port 0)."""
        return self._socket.getsockname()[1] if self._socket else self.options.port

    def run(self) -> None:
        """Serve until Ctrl+C (or `stop`), then unload the model."""
        try:
            self._uvicorn.run(sockets=[self._socket] if self._socket else None)
        finally:
            self.scheduler.stop()
            self.state.submit_pool.shutdown(wait=False)

    def stop(self) -> None:
        self._uvicorn.should_exit = True

    @property
    def started(self) -> bool:
        return self._uvicorn.started

    def run_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="localr1-serve", daemon=True)
        thread.start()
        return thread


class _Uvicorn(uvicorn.Server):
    """Cancels the open requests before uvicorn waits for their connections to close: each
    stream ends with its finish chunk and [DONE], and no swap starts while shutting down."""

    def __init__(self, config: uvicorn.Config, scheduler: Scheduler) -> None:
        super().__init__(config)
        self._scheduler = scheduler

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._scheduler.begin_stop()
        await super().shutdown(sockets=sockets)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to HOST:PORT (uvicorn listens on it); LocalR1Error when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise LocalR1Error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise LocalR1Error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
