"""The simulator's aiohttp application: Zoom's OAuth and Dashboard QoS endpoints."""

from __future__ import annotations

import asyncio
import base64
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web

from exporter.simulator.faults import DAILY_MESSAGE, QPS_MESSAGE, REQUEST_TIME, Fault, Faults
from exporter.simulator.limits import HEAVY, RESOURCE_INTENSIVE, WINDOW_SECONDS, RateLimits, Window
from exporter.simulator.scenario import Meeting, Scenario
from exporter.simulator.timefmt import day

TOKEN_LIFETIME: Final = 3600
PAGE_TOKEN_LIFETIME: Final = 15 * 60
DEFAULT_DAILY_LIMIT: Final = 30000
SCOPE: Final = "dashboard_meetings:read:admin dashboard_webinars:read:admin"
ENDPOINTS: Final = (
    "oauth_token",
    "list_meetings",
    "list_webinars",
    "meeting_participants_qos",
    "webinar_participants_qos",
    "meeting_participant_qos",
    "webinar_participant_qos",
)
_DISCOVERY: Final = {"list_meetings", "list_webinars"}
_LIVE_TYPES: Final = {"live"}
_OTHER_TYPES: Final = {"past", "pastOne"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JsonDict = dict[str, Any]


def zoom_error(status: int, code: int, message: str) -> web.Response:
    """Zoom's error body: {"code": ..., "message": ...}."""
    return web.json_response({"code": code, "message": message}, status=status)


def _not_available() -> web.Response:
    return zoom_error(404, 3001, "This meeting's detail info is not available.")


def _invalid_page_token() -> web.Response:
    return zoom_error(400, 300, "The next page token is invalid or expired.")


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str
    account_id: str


class Tokens:
    """Issued access tokens: expiry (scenario clock) and revocation generation."""

    def __init__(self) -> None:
        self._issued: dict[str, tuple[float, int]] = {}

    def issue(self, now: float, generation: int) -> str:
        token = secrets.token_urlsafe(32)
        self._issued[token] = (now + TOKEN_LIFETIME, generation)
        return token

    def knows(self, token: str) -> bool:
        """Whether this account issued `token` (expired or not)."""
        return token in self._issued

    def valid(self, token: str, now: float, generation: int) -> bool:
        expires, issued_in = self._issued.get(token, (0.0, -1))
        return issued_in == generation and now < expires


@dataclass
class Cursor:
    scope: str
    items: list[Any]
    offset: int
    expires: float
    generation: int


class PageTokens:
    """next_page_token -> an offset into a listing frozen at the first page."""

    def __init__(self) -> None:
        self._cursors: dict[str, Cursor] = {}

    def issue(self, scope: str, items: list[Any], offset: int, now: float, gen: int) -> str:
        self._cursors = {k: c for k, c in self._cursors.items() if c.expires > now}
        token = secrets.token_urlsafe(24)
        self._cursors[token] = Cursor(scope, items, offset, now + PAGE_TOKEN_LIFETIME, gen)
        return token

    def find(self, token: str, scope: str, now: float, gen: int) -> Cursor | None:
        cursor = self._cursors.get(token)
        if cursor is None or cursor.scope != scope or cursor.generation != gen:
            return None
        return cursor if now < cursor.expires else None


@dataclass
class Quota:
    """The account's daily request count; resets at 00:00 UTC of the scenario clock."""

    limit: int = DEFAULT_DAILY_LIMIT
    used: int = 0
    day: int = -1

    def _roll(self, now: float) -> None:
        today = int(now // 86400)
        if today != self.day:
            self.day, self.used = today, 0

    def consume(self, now: float) -> bool:
        """Count one request; False once the day's limit is spent."""
        self._roll(now)
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def remaining(self, now: float) -> int:
        """Requests left today."""
        self._roll(now)
        return max(0, self.limit - self.used)

    def used_today(self, now: float) -> int:
        """Requests counted against today's cap."""
        self._roll(now)
        return self.used


@dataclass
class Stats:
    """Requests received per endpoint name, and `total`."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))

    def hit(self, endpoint: str) -> None:
        self.counts[endpoint] = self.counts.get(endpoint, 0) + 1

    def snapshot(self) -> dict[str, int]:
        return {**self.counts, "total": sum(self.counts.values())}

    def reset(self) -> None:
        self.counts = dict.fromkeys(ENDPOINTS, 0)


def _windows() -> dict[str, Window]:
    return {category: Window(seconds) for category, seconds in WINDOW_SECONDS.items()}


@dataclass
class State:
    """Everything the app keeps between requests."""

    scenario: Scenario
    faults: Faults
    credentials: Credentials
    quota: Quota
    limits: RateLimits = field(default_factory=RateLimits)
    stats: Stats = field(default_factory=Stats)
    tokens: Tokens = field(default_factory=Tokens)
    pages: PageTokens = field(default_factory=PageTokens)
    # accepted requests per rate-limit category, in that category's sliding window
    windows: dict[str, Window] = field(default_factory=_windows)
    # 429s produced by the simulator's own enforcement, by X-RateLimit-Type
    limit_hits: dict[str, int] = field(default_factory=lambda: {"QPS": 0, "Daily-limit": 0})
    # requests currently held by a fault (e.g. a timeout), cancelled when the app shuts down
    held: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def client_secret(self) -> str:
        """The secret the token endpoint accepts now (see Faults.change_credentials)."""
        changed = self.faults.client_secret
        return self.credentials.client_secret if changed is None else changed

    def peak_rate(self, category: str) -> int:
        """The most accepted requests of `category` seen in any one of its windows."""
        if category not in self.windows:
            raise ValueError(f"unknown rate-limit category {category!r}")
        return self.windows[category].peak

    def limits_report(self, now: float) -> JsonDict:
        """What `GET /_sim/limits` answers."""
        return {
            "limit_hits": dict(self.limit_hits),
            "quota_used": self.quota.used_today(now),
            "quota_remaining": self.quota.remaining(now),
            "peak": {category: window.peak for category, window in self.windows.items()},
        }


STATE: Final = web.AppKey("simulator_state", State)  # the first account's
# Every account the simulator serves, by account_id (the first one included).
ACCOUNTS: Final = web.AppKey("simulator_accounts", dict[str, State])
_ACCOUNT: Final = web.RequestKey("simulator_account", State)  # when several are served


def _state(request: web.Request) -> State:
    state = request.get(_ACCOUNT)
    return state if state is not None else request.app[STATE]


async def _account_of(request: web.Request, states: dict[str, State]) -> State | None:
    """Which account a request is for, as Zoom tells: the token request's account_id, the
    bearer token's issuer; for /_sim/ routes, `?account=`."""
    path = request.path
    if path.startswith("/_sim/"):
        return states.get(request.query.get("account", ""))
    if path == "/oauth/token":
        form = await request.post()
        return states.get(str(form.get("account_id", request.query.get("account_id", ""))))
    token = _bearer(request)
    return next((state for state in states.values() if state.tokens.knows(token)), None)


@web.middleware
async def route_account(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With several accounts, hand the request the state of the account it is for (the
    first account's when it names none that is known: it then fails as Zoom would)."""
    states = request.app[ACCOUNTS]
    if len(states) > 1:
        state = await _account_of(request, states)
        if state is not None:
            request[_ACCOUNT] = state
    return await handler(request)


def _now(request: web.Request) -> float:
    """Scenario time; each handler reads it once and passes it on."""
    return _state(request).scenario.now()


# ----- the gateway: stats, faults, bearer auth, rate limits, quota and rate-limit headers -----


def _category(endpoint: str) -> str:
    return RESOURCE_INTENSIVE if endpoint in _DISCOVERY else HEAVY


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _limited(limit_type: str, message: str, retry_after: int) -> web.Response:
    response = zoom_error(429, 429, message)
    response.headers["X-RateLimit-Type"] = limit_type
    response.headers["Retry-After"] = str(retry_after)
    return response


def _admit(state: State, endpoint: str, now: float) -> web.Response | None:
    """Zoom's rate limiting: a 429 for a request over a limit, or None to let it through.

    The per-second (per-minute) window is checked first, then the daily quota; only a request
    that passes both is counted, in its window and against the quota.
    """
    category = _category(endpoint)
    window = state.windows[category]
    wait = window.wait(now, state.limits.limit(category))
    if wait is not None:
        state.limit_hits["QPS"] += 1
        return _limited("QPS", QPS_MESSAGE, wait)
    if not state.quota.consume(now):
        state.limit_hits["Daily-limit"] += 1
        return _limited("Daily-limit", DAILY_MESSAGE, math.ceil(86400 - now % 86400))
    window.record(now)
    return None


def _with_limits(response: web.StreamResponse, state: State, endpoint: str, now: float) -> None:
    if not response.prepared:  # a fault's own headers win (it may send odd ones on purpose)
        response.headers.setdefault("X-RateLimit-Category", _category(endpoint))
        response.headers.setdefault("X-RateLimit-Limit", str(state.quota.limit))
        response.headers.setdefault("X-RateLimit-Remaining", str(state.quota.remaining(now)))


def _strip_limits(response: web.StreamResponse, state: State) -> web.StreamResponse:
    """Drop every X-RateLimit-* header while Faults.rate_limit_headers(False) is in force."""
    if not state.faults.send_rate_limit_headers and not response.prepared:
        for name in [h for h in response.headers if h.lower().startswith("x-ratelimit-")]:
            del response.headers[name]
    return response


async def _held(state: State, fault: Fault, request: web.Request) -> web.StreamResponse | None:
    """Run a fault's response, cancellably: the app's shutdown cancels requests still held."""
    task = asyncio.current_task()
    if task is None:
        return await fault.respond(request)
    state.held.add(task)
    try:
        return await fault.respond(request)
    finally:
        state.held.discard(task)


@web.middleware
async def gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What Zoom's API gateway does before and after each endpoint.

    In order: count the request, apply a pending fault, check the bearer token (401/124),
    the per-second or per-minute limit (429 QPS), the daily quota (429 Daily-limit), then the
    endpoint; the answer gets the X-RateLimit-* headers (unless rate_limit_headers(False)).
    """
    endpoint = request.match_info.route.name
    if endpoint not in ENDPOINTS:
        return await handler(request)
    state = _state(request)
    state.stats.hit(endpoint)
    request[REQUEST_TIME] = now = _now(request)
    fault = state.faults.take(endpoint, now)
    response = None if fault is None else await _held(state, fault, request)
    if endpoint == "oauth_token":
        if response is None:
            response = await handler(request)
        return _strip_limits(response, state)
    if response is None:
        if fault is not None:
            now = _now(request)  # the fault held the request: read the clock again
        if not state.tokens.valid(_bearer(request), now, state.faults.token_generation):
            return _strip_limits(zoom_error(401, 124, "Invalid access token."), state)
        response = _admit(state, endpoint, now)
        if response is None:
            response = await handler(request)
    _with_limits(response, state, endpoint, now)
    return _strip_limits(response, state)


# ----- OAuth -----


def _client(request: web.Request) -> tuple[str, str] | None:
    """(client_id, client_secret) from the Basic Authorization header."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


async def oauth_token(request: web.Request) -> web.StreamResponse:
    """POST /oauth/token: Server-to-Server OAuth (grant_type=account_credentials)."""
    state = _state(request)
    creds = state.credentials
    params: dict[str, str] = dict(request.query)
    # post() is read once and kept: route_account may have read it (can_read_body is False then)
    params.update({k: str(v) for k, v in (await request.post()).items()})
    client = _client(request)
    if client is None:
        return web.json_response(
            {"reason": "Invalid client_id or client_secret", "error": "invalid_client"}, status=401
        )
    if client != (creds.client_id, state.client_secret):
        return web.json_response(
            {"reason": "Invalid client_id or client_secret", "error": "invalid_client"}, status=400
        )
    if params.get("grant_type") != "account_credentials":
        return web.json_response(
            {"reason": "Unsupported grant type", "error": "unsupported_grant_type"}, status=400
        )
    if params.get("account_id") != creds.account_id:
        return web.json_response(
            {"reason": "Invalid account_id", "error": "invalid_request"}, status=400
        )
    if state.faults.revoking:
        state.faults.revoke_tokens()
    token = state.tokens.issue(_now(request), state.faults.token_generation)
    return web.json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": SCOPE,
            "api_url": str(request.url.origin()),
        }
    )


# ----- pagination -----


@dataclass
class Page:
    items: list[Any]
    meta: JsonDict


def _page_size(request: web.Request, default: int, maximum: int) -> int | None:
    text = request.query.get("page_size", "")
    if not text:
        return default
    try:
        size = int(text)
    except ValueError:
        return None
    return min(max(size, 1), maximum)


def _paginate(
    request: web.Request,
    now: float,
    scope: str,
    listing: Callable[[], list[Any]],
    limits: tuple[int, int],
) -> Page | web.Response:
    """One page of a listing frozen at the first page; later pages come by next_page_token."""
    state = _state(request)
    default, maximum = limits
    size = _page_size(request, default, maximum)
    if size is None:
        return zoom_error(400, 300, "Invalid field: page_size.")
    token = request.query.get("next_page_token", "")
    if token:
        cursor = state.pages.find(token, scope, now, state.faults.page_generation)
        if cursor is None:
            return _invalid_page_token()
        items, offset = cursor.items, cursor.offset
    else:
        items, offset = listing(), 0
    end = offset + size
    following = ""
    if end < len(items):
        following = state.pages.issue(scope, items, end, now, state.faults.page_generation)
    meta = {
        "page_count": math.ceil(len(items) / size),
        "page_size": size,
        "total_records": len(items),
        "next_page_token": following,
    }
    return Page(items[offset:end], meta)


def _query_type(request: web.Request) -> str | None:
    """ "live" (the default), "past" or "pastOne"; None if invalid."""
    kind = request.query.get("type", "live")
    return kind if kind in _LIVE_TYPES | _OTHER_TYPES else None


# ----- discovery -----


def discovery(kind: str) -> Handler:
    """GET /v2/metrics/meetings (or /webinars): the live meetings."""
    key = f"{kind}s"

    async def handle(request: web.Request) -> web.StreamResponse:
        scenario, now = _state(request).scenario, _now(request)
        query_type = _query_type(request)
        if query_type is None:
            return zoom_error(400, 300, "Invalid field: type.")

        def listing() -> list[Any]:
            return list(scenario.meetings(kind, now)) if query_type == "live" else []

        page = _paginate(request, now, f"{kind}:list", listing, (30, 300))
        if isinstance(page, web.Response):
            return page
        live = [m for m in page.items if isinstance(m, Meeting) and m.live(now)]
        body = {"from": day(now), "to": day(now), **page.meta}
        body[key] = [scenario.render_meeting(m, now) for m in live]
        return web.json_response(body)

    return handle


# ----- participants QoS -----


def needs_double_encoding(uuid: str) -> bool:
    """Zoom's rule: a UUID that begins with "/" or contains "//" is double-encoded in paths."""
    return uuid.startswith("/") or "//" in uuid


def _meeting(request: web.Request, kind: str, now: float) -> Meeting | None:
    """The meeting named by the raw path segment: numeric id, or UUID (single or double encoded)."""
    scenario = _state(request).scenario
    if _query_type(request) != "live":
        return None
    segment = request.rel_url.raw_path.split("/")[4]
    once = unquote(segment)
    meeting = scenario.resolve(kind, once, now)
    if meeting is not None:
        single = once == meeting.uuid and needs_double_encoding(meeting.uuid)
        return None if single else meeting  # Zoom cannot route such a UUID single-encoded
    if "%" in once:
        return scenario.resolve(kind, unquote(once), now)
    return None


def participants_qos(kind: str) -> Handler:
    """GET /v2/metrics/{kind}s/{id}/participants/qos: a page of participants with samples."""

    async def handle(request: web.Request) -> web.StreamResponse:
        scenario, now = _state(request).scenario, _now(request)
        meeting = _meeting(request, kind, now)
        if meeting is None:
            return _not_available()
        scope = f"{kind}:{meeting.uuid}:{meeting.start_time}:qos"
        page = _paginate(request, now, scope, lambda: scenario.listing(meeting, now), (1, 10))
        if isinstance(page, web.Response):
            return page
        people = [scenario.render_participant(meeting, e, now) for e in page.items]
        return web.json_response({**page.meta, "participants": people})

    return handle


def participant_qos(kind: str) -> Handler:
    """GET /v2/metrics/{kind}s/{id}/participants/{participantId}/qos: one participant."""

    async def handle(request: web.Request) -> web.StreamResponse:
        scenario, now = _state(request).scenario, _now(request)
        meeting = _meeting(request, kind, now)
        if meeting is None:
            return _not_available()
        wanted = unquote(request.match_info["participant_id"])
        entry = scenario.find_participant(meeting, wanted, now)
        if entry is None:
            return zoom_error(404, 3001, "Participant not found.")
        return web.json_response(scenario.render_participant(meeting, entry, now, single=True))

    return handle


# ----- simulator control (/_sim) -----


async def get_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"faults": _state(request).faults.pending()})


async def post_faults(request: web.Request) -> web.StreamResponse:
    """POST /_sim/faults {"fault": "rate_limit", "count": 2, ...}."""
    faults = _state(request).faults
    try:
        spec = await request.json()
        if not isinstance(spec, dict):
            raise ValueError("the body must be a JSON object")
        faults.apply(spec)
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response({"faults": faults.pending()})


async def delete_faults(request: web.Request) -> web.StreamResponse:
    _state(request).faults.clear()
    return web.json_response({"faults": []})


async def get_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(_state(request).stats.snapshot())


async def reset_stats(request: web.Request) -> web.StreamResponse:
    stats = _state(request).stats
    stats.reset()
    return web.json_response(stats.snapshot())


async def get_scenario(request: web.Request) -> web.StreamResponse:
    """GET /_sim/scenario: the scenario time, the live meetings and who is present."""
    scenario, now = _state(request).scenario, _now(request)
    meetings = [
        {
            "kind": kind,
            "id": meeting.id,
            "uuid": meeting.uuid,
            "topic": meeting.topic,
            "participants": scenario.render_meeting(meeting, now)["participants"],
        }
        for kind in ("meeting", "webinar")
        for meeting in scenario.meetings(kind, now)
    ]
    total = sum(int(m["participants"]) for m in meetings)
    return web.json_response({"time": now, "meetings": meetings, "participants": total})


async def get_limits(request: web.Request) -> web.StreamResponse:
    """GET /_sim/limits: enforced 429s, today's quota and the peak request rates."""
    return web.json_response(_state(request).limits_report(_now(request)))


def _routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/oauth/token", oauth_token, name="oauth_token")
    for kind in ("meeting", "webinar"):
        base = f"/v2/metrics/{kind}s"
        router.add_get(base, discovery(kind), name=f"list_{kind}s")
        router.add_get(
            base + "/{meeting_id}/participants/qos",
            participants_qos(kind),
            name=f"{kind}_participants_qos",
        )
        router.add_get(
            base + "/{meeting_id}/participants/{participant_id}/qos",
            participant_qos(kind),
            name=f"{kind}_participant_qos",
        )
    router.add_get("/_sim/faults", get_faults)
    router.add_post("/_sim/faults", post_faults)
    router.add_delete("/_sim/faults", delete_faults)
    router.add_get("/_sim/stats", get_stats)
    router.add_delete("/_sim/stats", reset_stats)
    router.add_post("/_sim/stats/reset", reset_stats)
    router.add_get("/_sim/scenario", get_scenario)
    router.add_get("/_sim/limits", get_limits)


async def _release_held(app: web.Application) -> None:
    """On shutdown, cancel the requests a fault still holds (so stopping does not wait)."""
    for state in app[ACCOUNTS].values():
        for task in list(state.held):
            task.cancel()


def create_app(
    scenario: Scenario,
    faults: Faults | None = None,
    *,
    client_id: str = "demo-client",
    client_secret: str = "demo-secret",
    account_id: str = "demo-account",
    daily_limit: int | None = None,
    rate_limits: RateLimits | None = None,
) -> web.Application:
    """The simulator as an aiohttp Application (for pytest-aiohttp or an AppRunner).

    `rate_limits` turns on Zoom's per-second/per-minute enforcement (None: none). The daily cap
    is `daily_limit`, else `rate_limits.daily`, else 30,000.
    """
    app = web.Application(middlewares=[route_account, gateway])
    app[ACCOUNTS] = {}
    app[STATE] = add_account(
        app,
        scenario,
        faults,
        client_id=client_id,
        client_secret=client_secret,
        account_id=account_id,
        daily_limit=daily_limit,
        rate_limits=rate_limits,
    )
    _routes(app)
    app.on_shutdown.append(_release_held)
    return app


def add_account(
    app: web.Application,
    scenario: Scenario,
    faults: Faults | None = None,
    *,
    client_id: str,
    client_secret: str,
    account_id: str,
    daily_limit: int | None = None,
    rate_limits: RateLimits | None = None,
) -> State:
    """Serve one more Zoom account: its own credentials, scenario, limits, quota and faults.
    A token request names it by account_id; its tokens then reach only its meetings."""
    if account_id in app[ACCOUNTS]:
        raise ValueError(f"account {account_id!r} is served already")
    limits = rate_limits if rate_limits is not None else RateLimits()
    if daily_limit is None:
        daily_limit = limits.daily if limits.daily is not None else DEFAULT_DAILY_LIMIT
    state = app[ACCOUNTS][account_id] = State(
        scenario=scenario,
        faults=faults if faults is not None else Faults(),
        credentials=Credentials(client_id, client_secret, account_id),
        quota=Quota(limit=daily_limit),
        limits=limits,
    )
    return state


def app_state(app: web.Application) -> State:
    """The simulator state of an app made by `create_app` (stats, quota, tokens)."""
    return app[STATE]
