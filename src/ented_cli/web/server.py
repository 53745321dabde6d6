"""Start `ented serve`: bind the address, load the model once, print the link, serve until
Ctrl-C, then remove every temporary file.

uvicorn runs the Starlette app on a socket bound here first, so a port in use is a one-line
error before the model loads, and `--port 0` can print the port it got."""

from __future__ import annotations

import errno
import ipaddress
import secrets
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass

from ented_cli.errors import EntedError, UsageError

WEB_EXTRA_HINT = 'ented serve needs the web extra; install it with: pip install "ented[web]"'


@dataclass(frozen=True)
class ServeRequest:
    host: str = "127.0.0.1"
    port: int = 8765
    open_browser: bool = False
    token: str | None = None
    max_upload_mb: float = 200.0
    queue: int = 16
    keep_minutes: float = 30.0
    fidelity: float = 0.5
    max_pixels: int | None = None
    weights: str | None = None
    download: bool = False
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    batch_size: int | None = None


def is_local(host: str) -> bool:
    """Whether `host` is reachable from this computer only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or a one-line UsageError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address of this computer ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} is in use (another ented serve?); pass --port with another number, "
                "or --port 0 for any free one"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); check --host") from None
    return sock


def page_url(host: str, port: int, token: str | None) -> str:
    if host in ("0.0.0.0", "::", ""):  # every address: this computer reaches it as 127.0.0.1
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


class WebServer:
    """The app on a bound socket, run in the foreground (the command) or in a thread (tests)."""

    def __init__(self, request: ServeRequest, sock: socket.socket, pipeline, warn=None):
        import uvicorn

        from ented_cli.web.app import Settings, create_app
        from ented_cli.web.jobs import JobStore
        from ented_cli.web.service import RestoreService

        self.sock, self.request = sock, request
        local = is_local(request.host)
        # Another computer can reach it: without a token anyone on the network could use it.
        self.token = request.token or (None if local else secrets.token_urlsafe(16))
        self.port = sock.getsockname()[1]
        self.url = page_url(request.host, self.port, self.token)
        keep_s = request.keep_minutes * 60
        store = JobStore(keep_s, max_jobs=max(16, 4 * request.queue))
        self.service = RestoreService(pipeline, store, request.queue)
        settings = Settings(
            max_upload_bytes=int(request.max_upload_mb * 2**20),
            max_pixels=request.max_pixels,
            fidelity=request.fidelity,
            keep_minutes=request.keep_minutes,
            token=self.token,
            local_only=local,
        )
        config = uvicorn.Config(
            create_app(self.service, settings),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve until Ctrl-C (uvicorn stops gracefully), then clean up."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> None:
        """Serve on a thread (for tests and scripts); `stop()` ends it."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.close()

    def close(self) -> None:
        self.service.close()  # the worker stops, every temporary file is removed
        self.sock.close()


def load_pipeline(request: ServeRequest, warn: Callable[[str], None] | None = None):
    """The pipeline `ented restore` uses, with the options the page needs."""
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    options = RestoreOptions(
        fidelity=request.fidelity,
        min_face=16.0,  # `ented restore`'s default --min-face
        report_identity=True,  # the page shows how alike each face is to its reference
        max_pixels=request.max_pixels,
    )
    return RestorePipeline.from_weights(
        request.weights,
        options,
        device=request.device,
        dtype=request.dtype,
        batch_size=request.batch_size,
        download=request.download,
        warn=warn,
        threads=request.threads,
    )


def run_serve(request: ServeRequest, note: Callable[[str], None], warn=None) -> None:
    """`ented serve`: everything from the socket to Ctrl-C."""
    try:
        import python_multipart  # noqa: F401  (Starlette reads uploads with it)
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise EntedError(WEB_EXTRA_HINT) from None
    sock = bind(request.host, request.port)
    try:
        note("loading the model ...")
        pipeline = load_pipeline(request, warn)
        server = WebServer(request, sock, pipeline, warn)
    except BaseException:
        sock.close()
        raise
    device = getattr(pipeline.restorer, "device", "cpu")
    note(f"model ready on {device}; press Ctrl-C to stop (the temporary files go with it)")
    if server.token and not is_local(request.host):
        note(
            "other computers reach it at this computer's network address instead of "
            "127.0.0.1, with the same ?token=...; without the token nothing is served"
        )
    print(f"ented serve: open {server.url}", flush=True)  # stdout: the one thing to copy
    if request.open_browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve()
    except KeyboardInterrupt:  # uvicorn stops gracefully, then passes Ctrl-C on: a normal end
        pass
    print("ented serve: stopped", file=sys.stderr)
