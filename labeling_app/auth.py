"""Logins for the labelling app: a login page, DB-backed sessions in an HttpOnly cookie, and the checks Gradio
runs on every request (``auth_dependency``) and our handlers run again on every action.

Sessions live in the database (``db.login_sessions``), not in one process's memory: several app processes behind
one PostgreSQL share them, a restart logs nobody out, and deactivating an annotator ends their sessions at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlparse

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from db.annotators import authenticate
from db.review import REVIEW_ROLES
from db.login_sessions import annotator_for_token, close_session, open_session
from labeling_app.settings import LabelingSettings

COOKIE = "rlhf_session"
CACHE_SECONDS = 2.0  # a token's lookup is reused this long (Gradio asks on every request of a page)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str


class LoginThrottle:
    """Refuses logins after too many failures in a window (per process, in memory), counted per name *and* client
    address: a stranger who types someone's name wrong five times locks out only themselves, not that person. A
    guess spread over many addresses still meets a ceiling per name (``spread`` times the attempts in the window).
    Behind a proxy every client has the proxy's address, which is the per-name behaviour. Memory is bounded: past
    ``keep`` keys the least recently failed are forgotten, one per new key (constant time, no scan)."""

    def __init__(self, attempts: int, window: float, lockout: float, *, spread: int = 20, keep: int = 10_000) -> None:
        self.attempts, self.window, self.lockout, self.spread, self.keep = attempts, window, lockout, spread, keep
        self.failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self.by_name: OrderedDict[str, deque[float]] = OrderedDict()
        self.locked_until: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.lock = threading.Lock()

    def blocked(self, name: str, client: str = "") -> bool:
        name = name[:MAX_NAME]
        now = time.monotonic()
        with self.lock:
            if self.locked_until.get((name, client), 0.0) > now:
                return True
            recent = self.by_name.get(name)
            return recent is not None and len(self._trim(recent, now)) >= self.attempts * self.spread

    def failed(self, name: str, client: str = "") -> None:
        name = name[:MAX_NAME]  # longer names are refused before this; a key never holds more
        now = time.monotonic()
        with self.lock:
            recent = self._touch(self.failures, (name, client), now)
            self._touch(self.by_name, name, now)
            if len(recent) >= self.attempts:
                self.locked_until[(name, client)] = now + self.lockout
                self.locked_until.move_to_end((name, client))
                while len(self.locked_until) > self.keep:
                    self.locked_until.popitem(last=False)
                recent.clear()

    def succeeded(self, name: str, client: str = "") -> None:
        with self.lock:
            self.failures.pop((name, client), None)

    def _touch(self, table: OrderedDict, key: object, now: float) -> deque[float]:  # type: ignore[type-arg]
        """The key's failures in the window with this one added; the key becomes the most recent."""
        recent = table.get(key)
        if recent is None:
            recent = table[key] = deque()
            while len(table) > self.keep:
                table.popitem(last=False)
        table.move_to_end(key)
        self._trim(recent, now).append(now)
        return recent

    def _trim(self, recent: deque[float], now: float) -> deque[float]:
        while recent and recent[0] < now - self.window:
            recent.popleft()
        return recent


class Authenticator:
    """Resolves the login cookie to a user (cached for a couple of seconds) for Gradio and for our handlers."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.sessions = sessions
        self.clock = clock
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, token: str | None) -> User | None:
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.sessions.begin() as session:  # ends in COMMIT: see labeling_app.annotate on ROLLBACK
            annotator = annotator_for_token(session, token, self.clock())
            user = User(annotator.id, annotator.name, annotator.role) if annotator else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + CACHE_SECONDS, user)
        return user

    def forget(self, token: str | None) -> None:
        with self._lock:
            self._cache.pop(token or "", None)

    def cached(self, token: str | None) -> tuple[bool, User | None]:
        """(hit, user) from the cache alone: no thread hop for the many requests of one page."""
        if not token:
            return True, None
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    async def user(self, request: Request) -> User | None:
        token = request.cookies.get(COOKIE)
        hit, user = self.cached(token)
        return user if hit else await run_in_threadpool(self.lookup, token)

    def dependency(self, *, admin: bool = False, roles: tuple[str, ...] | None = None) -> Callable:
        """Gradio's ``auth_dependency``: the user's name, or None (401) when not logged in (or not an admin, or
        of none of ``roles``)."""
        allowed = ("admin",) if admin else roles

        async def name_of(request: Request) -> str | None:
            user = await self.user(request)
            if user is None or (allowed is not None and user.role not in allowed):
                return None
            return user.name

        return name_of


def _safe_next(target: str | None) -> str:
    """Only same-site paths after login (no open redirect to another host).

    >>> _safe_next("/admin"), _safe_next("https://evil.example/"), _safe_next("//evil.example"), _safe_next(None)
    ('/admin', '/', '/', '/')
    """
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        return "/"
    return target


MAX_NAME = 100  # db.annotators: names are 1-100 characters
MAX_PASSWORD = 4096  # far above any passphrase; hashing a megabyte per guess would be the attacker's lever


def _cross_site(request: Request) -> bool:
    """The browser says the request comes from another origin: ``Sec-Fetch-Site`` (every current browser sends it;
    the browser computes it, so a proxy rewriting Host does not matter) is neither same-origin nor none (typed,
    bookmarked); without it, an ``Origin`` header naming another host. Scripts and API clients send neither and
    pass; SameSite=Lax already keeps the cookie off cross-site POSTs."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlparse(origin).netloc != request.headers.get("host", "")
    return origin == "null"


def login_page(title: str, message: str = "", next_path: str = "/", name: str = "") -> str:
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · {escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f7f9; display: flex; min-height: 100vh;
       align-items: center; justify-content: center; margin: 0; }}
form {{ background: white; padding: 2rem 2.5rem; border-radius: 12px; box-shadow: 0 2px 12px rgba(0,0,0,.08);
       width: 20rem; }}
h1 {{ font-size: 1.2rem; margin: 0 0 1.2rem; }} label {{ display: block; margin: .8rem 0 .3rem; font-size: .9rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .55rem; font-size: 1rem; border: 1px solid #ccc;
        border-radius: 6px; }}
button {{ margin-top: 1.3rem; width: 100%; padding: .6rem; font-size: 1rem; border: 0; border-radius: 6px;
         background: #f97316; color: white; cursor: pointer; }}
.error {{ color: #b91c1c; background: #fee2e2; padding: .5rem .7rem; border-radius: 6px; }}
</style></head>
<body><form method="post" action="/login">
<h1>{escape(title)}</h1>{error}
<label for="username">Name</label><input id="username" name="username" autocomplete="username" autofocus
 value="{escape(name)}" required>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<input type="hidden" name="next" value="{escape(next_path)}">
<button type="submit" id="login">Log in</button>
</form></body></html>"""


def add_auth_routes(
    app: FastAPI,
    sessions: sessionmaker[Session],
    auth: Authenticator,
    settings: LabelingSettings,
    clock: Callable[[], datetime],
) -> None:
    throttle = LoginThrottle(
        settings.login_attempts, settings.login_window.total_seconds(), settings.login_lockout.total_seconds()
    )

    @app.get("/login", response_class=HTMLResponse)
    async def show_login(next: str = "/") -> HTMLResponse:  # noqa: A002 - the query parameter's name
        return HTMLResponse(login_page(settings.title, next_path=_safe_next(next)))

    @app.post("/login")
    async def do_login(
        request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/")  # noqa: A002
    ) -> Response:
        target = _safe_next(next)
        if _cross_site(request):  # a form on another site logging the browser in as someone else (login CSRF)
            return HTMLResponse(login_page(settings.title, "Log in from this page.", target), status_code=403)
        if len(username) > MAX_NAME or len(password) > MAX_PASSWORD:  # no such account; nothing to remember
            page = login_page(settings.title, "Wrong name or password.", target)
            return HTMLResponse(page, status_code=401)
        client = request.client.host if request.client else ""
        if throttle.blocked(username, client):
            page = login_page(settings.title, "Too many failed attempts: wait a minute and try again.", target, username)
            return HTMLResponse(page, status_code=429)

        def check() -> str | None:
            with sessions.begin() as session:
                annotator = authenticate(session, username, password)
                return open_session(session, annotator, clock(), lifetime=settings.session_lifetime) if annotator else None

        token = await run_in_threadpool(check)
        if token is None:
            throttle.failed(username, client)
            page = login_page(settings.title, "Wrong name or password.", target, username)
            return HTMLResponse(page, status_code=401)
        throttle.succeeded(username, client)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, token, max_age=int(settings.session_lifetime.total_seconds()), httponly=True, samesite="lax",
            secure=settings.secure_cookies, path="/",
        )
        return response

    @app.get("/logout")
    async def logout(request: Request) -> Response:
        if _cross_site(request):  # a link on another site logging the browser out
            return RedirectResponse("/", status_code=303)
        token = request.cookies.get(COOKIE)

        def close() -> None:
            with sessions.begin() as session:
                close_session(session, token)

        await run_in_threadpool(close)
        auth.forget(token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    app.add_middleware(LoginGate, auth=auth)


class LoginGate:
    """A page load without a valid login goes to the login page; a non-admin on /admin gets a 403 page, and so does
    someone who is neither a reviewer nor an admin on /review.

    Plain ASGI (not ``BaseHTTPMiddleware``, which buffers every response through extra tasks and slows Gradio's
    event streams); only GET requests for the three pages are looked at, everything else passes straight through.
    """

    def __init__(self, app: Any, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "GET" or path not in ("/", "/admin/", "/review/"):
            await self.app(scope, receive, send)
            return
        user = await self.auth.user(Request(scope))
        if user is None:
            response: Response = RedirectResponse(f"/login?next={quote(path)}", status_code=303)
        elif path.startswith("/admin") and user.role != "admin":
            response = HTMLResponse(
                "<!doctype html><title>Admins only</title>"
                "<p>This page is for admins only. <a href='/'>Back to labelling</a></p>",
                status_code=403,
            )
        elif path.startswith("/review") and user.role not in REVIEW_ROLES:
            response = HTMLResponse(
                "<!doctype html><title>Reviewers only</title>"
                "<p>This page is for reviewers and admins. <a href='/'>Back to labelling</a></p>",
                status_code=403,
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
