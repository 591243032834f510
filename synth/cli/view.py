"""`synth view`: a local, read-only web viewer of one or more datasets."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from synth.cli.errors import fail
from synth.cli.options import path_argument
from synth.cli.output import err

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The Host headers a loopback viewer answers: a page elsewhere that rebinds its own domain to
# 127.0.0.1 (DNS rebinding) sends its domain, and gets nothing.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


def view(
    dirs: Annotated[list[Path], path_argument("DIRS", help="Dataset directories.")],
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Loopback by default: anyone who can reach the address can read the data.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address; open no browser.")] = False,
) -> None:
    """Browse datasets in a web browser: the funnel and the mix, kept records and rejects with filters
    and search, each record's provenance, lineage, preference pair and scores. Read-only: nothing is
    written to a dataset. Runs until Ctrl-C."""
    from synth.shards.layout import MANIFEST, is_dataset

    for path in dirs:
        if not is_dataset(path):
            fail(f"{path}: no {MANIFEST}; not a dataset folder")
    import uvicorn

    from synth.viewer import create_app

    app = create_app(dirs, allowed_hosts=LOOPBACK_HOSTS if host in LOOPBACK else None)
    listener = _listen(host, port)
    bound = listener.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
    if host not in LOOPBACK:
        err.print(Text(f"listening on {host}: anyone who can reach it can read these datasets"), highlight=False)
    print(f"serving {url} (Ctrl-C to stop)", flush=True)
    threading.Thread(target=app.state.warm, name="warm", daemon=True).start()
    if not no_browser and has_browser(os.environ, sys.platform):
        threading.Thread(target=_open, args=(url,), daemon=True).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:
        pass  # uvicorn stopped serving, then passed the Ctrl-C on: stopping is how a viewer ends
    finally:
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (a free port for 0), so the address is known before serving."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    return listener


def has_browser(environ: Mapping[str, str], platform: str) -> bool:
    """Whether a graphical browser can open: macOS and Windows have one; elsewhere it needs a display
    (or an explicit $BROWSER). Without one, Python would start a text browser in this terminal."""
    if environ.get("BROWSER"):
        return True
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def _open(url: str) -> None:
    import webbrowser

    # No browser after all: the address is printed, which is all a user needs.
    with contextlib.suppress(Exception):
        webbrowser.open(url)
