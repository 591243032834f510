"""The viewer's web app (Starlette, Jinja2): the overview of every dataset, lists of records and
rejects, one record's page. GET only; record text is untrusted, so every page is escaped and the
Content-Security-Policy forbids scripts outright."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import polars as pl
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from synth.shards.layout import DatasetError
from synth.viewer import queries
from synth.viewer.data import KINDS, DatasetView, Kind, Snapshot, open_datasets
from synth.viewer.overview import overview
from synth.viewer.record import arrange

HERE = Path(__file__).parent
# No script, frame, font, connection or object from anywhere; styles from our own stylesheet only.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_SECURITY_NAMES = {name for name, _ in SECURITY_HEADERS}
MAX_PARAM = 1000  # characters of a search text or filter value


class SecurityHeaders:
    """Adds the CSP and its companions to every response, errors and 404s included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SECURITY_NAMES]
                message["headers"] = kept + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


def link(path: str, **params: Any) -> str:
    """`path` with the non-empty `params` as its query string."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "", 0)})
    return f"{path}?{query}" if query else path


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped; no template marks record text safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["link"] = link
    env.filters["thousands"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    env.filters["number"] = lambda x: f"{x:,.1f}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else x
    return Jinja2Templates(env=env)


class Viewer:
    """The routes over the datasets given on the command line."""

    def __init__(self, datasets: list[DatasetView]) -> None:
        self.datasets = datasets
        self.templates = _templates()

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context = {"datasets": self.datasets, **context}
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    @staticmethod
    def overview_of(view: DatasetView, snapshot: Snapshot) -> dict[str, Any]:
        return view.cached(snapshot, "overview", lambda: overview(snapshot))

    @staticmethod
    def facets_of(view: DatasetView, snapshot: Snapshot, kind: Kind) -> dict[str, list[tuple[str, int]]]:
        return view.cached(snapshot, f"facets:{kind}", lambda: queries.facets(snapshot, kind))

    def warm(self) -> None:
        """Compute what the first visit would (checksums, the overviews, the filters' values) ahead
        of it; a dataset that cannot be read now is left for its page to report."""
        for view in self.datasets:
            try:
                snapshot = view.snapshot()
                self.overview_of(view, snapshot)
                for kind in KINDS:
                    self.facets_of(view, snapshot, kind)
            except (DatasetError, OSError, pl.exceptions.PolarsError):
                continue

    def _dataset(self, request: Request) -> tuple[DatasetView, Snapshot]:
        number = request.path_params["number"]
        if not 0 <= number < len(self.datasets):
            raise HTTPException(404, f"no dataset number {number}")
        view = self.datasets[number]
        try:
            return view, view.snapshot()
        except DatasetError as e:
            raise HTTPException(503, str(e)) from None

    def index(self, request: Request) -> Response:
        entries = []
        for view in self.datasets:
            try:
                snapshot = view.snapshot()
            except DatasetError as e:
                entries.append({"view": view, "error": str(e)})
                continue
            figures = self.overview_of(view, snapshot)
            entries.append({"view": view, "snapshot": snapshot, "figures": figures, "error": None})
        return self.page(request, "index.html", entries=entries)

    def records(self, request: Request) -> Response:
        view, snapshot = self._dataset(request)
        params = request.query_params
        kind = _kind(params.get("kind", "kept"))
        allowed = queries.filters_for(kind)
        filters = {name: _text(params, name) for name in allowed if params.get(name)}
        query = queries.ListQuery(kind, filters, _text(params, "q"), _page(params.get("page", "1")))
        facets = self.facets_of(view, snapshot, kind)
        result = queries.page_of(snapshot, query)
        base = f"/d/{view.number}/records"
        keep = {"kind": kind, **filters, "q": query.text}
        return self.page(
            request,
            "records.html",
            view=view,
            snapshot=snapshot,
            query=query,
            result=result,
            facets=facets,
            filter_names=[n for n in allowed if n in facets or n in filters],
            counts={k: snapshot.rows(k) for k in KINDS},
            prev_link=link(base, **keep, page=query.page - 1) if query.page > 1 else None,
            next_link=link(base, **keep, page=query.page + 1) if query.page < result.pages else None,
            base=base,
        )

    def record(self, request: Request) -> Response:
        view, snapshot = self._dataset(request)
        record_id = _text(request.query_params, "id")
        prefer = _kind(request.query_params.get("kind", "kept"))
        found = queries.find_record(snapshot, record_id, prefer) if record_id else None
        if found is None:
            raise HTTPException(404, f"no record or reject with id {record_id!r} in the shards read")
        kind, row, shared = found
        return self.page(
            request,
            "record.html",
            view=view,
            snapshot=snapshot,
            kind=kind,
            row=row,
            shared=shared,
            parts=arrange(row),
            ancestors=queries.ancestors(snapshot, row),
            children=queries.children(snapshot, str(row["id"])),
        )

    def error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
        else:  # a shard replaced or removed while it was read: the next request reads the new state
            status, message = 503, f"the dataset changed while it was read ({type(exc).__name__}); reload the page"
        return self.page(request, "error.html", status=status, status_code=status, message=message)


def _kind(value: str) -> Kind:
    if value not in KINDS:
        raise HTTPException(400, f"kind must be one of {', '.join(KINDS)}, not {value[:40]!r}")
    return value  # type: ignore[return-value]


def _page(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10**9:
        raise HTTPException(400, f"page must be a whole number from 1, not {value[:40]!r}")
    return int(value)


def _text(params: Any, name: str) -> str:
    value = str(params.get(name, ""))
    if len(value) > MAX_PARAM:
        raise HTTPException(400, f"{name} is longer than {MAX_PARAM} characters")
    return value


def create_app(paths: Sequence[Path], allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The viewer over the dataset folders `paths` (each refused with a DatasetError if it is not
    one). `allowed_hosts`: the Host headers it answers (the CLI passes the loopback names, so a
    web page that rebinds its domain to 127.0.0.1 cannot read the data); None answers any."""
    viewer = Viewer(open_datasets([Path(p) for p in paths]))
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    routes = [
        Route("/", viewer.index, methods=["GET"]),
        Route("/d/{number:int}/records", viewer.records, methods=["GET"]),
        Route("/d/{number:int}/record", viewer.record, methods=["GET"]),
        Route("/style.css", lambda request: FileResponse(HERE / "static" / "style.css"), methods=["GET"]),
    ]
    handlers = {HTTPException: viewer.error, pl.exceptions.PolarsError: viewer.error, OSError: viewer.error}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.warm = viewer.warm  # the command runs it beside the server
    return app
