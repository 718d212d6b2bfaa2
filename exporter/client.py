"""The Zoom API client: Server-to-Server OAuth, timeouts, pagination, typed errors.

One aiohttp session serves every call. Secrets stay inside this module: errors and logs name
the endpoint and Zoom's code, never a token or the client secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr, ValidationError
from yarl import URL

from exporter.models import LiveMeeting, Participant

log = logging.getLogger(__name__)

M = TypeVar("M", LiveMeeting, Participant)

Kind = Literal["meeting", "webinar"]

QOS_PAGE_SIZE = 10  # Zoom's cap for the participant QoS lists
DISCOVERY_PAGE_SIZE = 300
TOKEN_REFRESH_MARGIN = 300.0  # renew this many seconds before the token expires
MAX_PAGES = 10_000  # a guard against a server that never stops paginating

ZOOM_CODE_INVALID_TOKEN = 124
ZOOM_CODE_PAGE_TOKEN = 300
ZOOM_CODE_NOT_FOUND = 3001


class ZoomError(Exception):
    """Any failure talking to Zoom. `str()` is safe to log."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class ZoomAPIError(ZoomError):
    """Zoom answered with an error status; `code` is Zoom's own error code when it sent one."""

    def __init__(self, endpoint: str, status: int, code: int | None, message: str) -> None:
        detail = f"HTTP {status}" + (f", Zoom code {code}" if code is not None else "")
        super().__init__(endpoint, f"{detail}: {message}" if message else detail)
        self.status = status
        self.code = code
        self.zoom_message = message

    @property
    def gone(self) -> bool:
        """The meeting (or participant) is not live any more: 404 with code 3001."""
        return self.status == 404 and self.code == ZOOM_CODE_NOT_FOUND


class ZoomAuthError(ZoomError):
    """The token endpoint refused the credentials."""


class ZoomTransportError(ZoomError):
    """No usable answer: timeout, connection failure, or a body that is not the JSON we expect."""


def encode_meeting_id(meeting_id: str) -> str:
    """Percent-encode an id for a URL path; UUIDs that start with / or hold // twice over."""
    once = quote(meeting_id, safe="")
    if meeting_id.startswith("/") or "//" in meeting_id:
        return quote(once, safe="")
    return once


def endpoint_name(kind: Kind, what: str) -> str:
    """Stable `endpoint` label values, e.g. meeting_participants_qos."""
    return f"{kind}_{what}"


class RequestCounter:
    """Counts API calls by endpoint and status code (or "error" when there was no answer)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, endpoint: str, code: str) -> None:
        self._counts[(endpoint, code)] += 1

    def snapshot(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((e, c, n) for (e, c), n in sorted(self._counts.items()))

    def total(self) -> int:
        return sum(self._counts.values())


class ZoomClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        oauth_url: str,
        account_id: str,
        client_id: str,
        client_secret: SecretStr,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._api_url = api_url.rstrip("/")
        self._oauth_url = oauth_url
        self._account_id = account_id
        credentials = f"{client_id}:{client_secret.get_secret_value()}".encode()
        self._basic_auth = SecretStr("Basic " + base64.b64encode(credentials).decode("ascii"))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self.requests = RequestCounter()

    # -- OAuth -------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is None or self._clock() >= self._token_expires:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    def invalidate_token(self) -> None:
        self._token = None

    async def _fetch_token(self) -> None:
        form = {"grant_type": "account_credentials", "account_id": self._account_id}
        headers = {"Authorization": self._basic_auth.get_secret_value()}
        status, payload = await self._send(
            "oauth_token", "POST", URL(self._oauth_url), data=form, headers=headers
        )
        if status != 200:
            reason = _field(payload, "reason") or _field(payload, "error") or "rejected"
            if status in (400, 401, 403):
                raise ZoomAuthError(
                    "oauth_token",
                    f"HTTP {status}: {reason}; check ZOOM_EXPORTER_ACCOUNT_ID, "
                    "ZOOM_EXPORTER_CLIENT_ID and ZOOM_EXPORTER_CLIENT_SECRET",
                )
            raise ZoomAPIError("oauth_token", status, None, reason)
        token = payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise ZoomTransportError("oauth_token", "the answer has no access_token")
        expires_in = payload.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        margin = min(TOKEN_REFRESH_MARGIN, lifetime / 10)
        self._token = token
        self._token_expires = self._clock() + lifetime - margin
        log.debug("obtained an access token valid for %.0f s", lifetime)

    # -- requests ----------------------------------------------------------------------------

    async def _send(
        self, endpoint: str, method: str, url: URL, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        """One HTTP call; returns (status, JSON object). Counts it, whatever happens."""
        try:
            async with self._session.request(
                method, url, timeout=self._timeout, **kwargs
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            self.requests.add(endpoint, "error")
            raise ZoomTransportError(endpoint, "timed out") from None
        except aiohttp.ClientError as error:
            self.requests.add(endpoint, "error")
            raise ZoomTransportError(endpoint, f"{type(error).__name__}") from None
        self.requests.add(endpoint, str(status))
        try:
            payload = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            if status >= 400:
                return status, {}
            raise ZoomTransportError(
                endpoint, f"HTTP {status} with a body that is not JSON"
            ) from None
        if not isinstance(payload, dict):
            raise ZoomTransportError(endpoint, f"HTTP {status} with JSON that is not an object")
        return status, payload

    async def _api_call(self, endpoint: str, url: URL) -> tuple[int, dict[str, Any]]:
        token = await self._access_token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return await self._send(endpoint, "GET", url, headers=headers)

    def _url(self, path: str, params: dict[str, str]) -> URL:
        return URL(self._api_url + path, encoded=True).update_query(params)

    async def get(self, endpoint: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET an API path (already percent-encoded); renews the token once on 401/124."""
        url = self._url(path, params)
        status, payload = await self._api_call(endpoint, url)
        if status == 401 and _code(payload) == ZOOM_CODE_INVALID_TOKEN:
            log.info("%s: access token rejected (code 124); renewing it once", endpoint)
            self.invalidate_token()
            status, payload = await self._api_call(endpoint, url)
        if status >= 400:
            raise ZoomAPIError(endpoint, status, _code(payload), _field(payload, "message"))
        return payload

    async def pages(
        self, endpoint: str, path: str, params: dict[str, str], page_size: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield every page of a list endpoint, following `next_page_token`."""
        query = {**params, "page_size": str(page_size)}
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = await self.get(endpoint, path, query)
            yield page
            token = page.get("next_page_token")
            if not isinstance(token, str) or not token:
                return
            if token in seen:
                raise ZoomTransportError(endpoint, "pagination repeats a next_page_token")
            seen.add(token)
            query = {**params, "page_size": str(page_size), "next_page_token": token}
        raise ZoomTransportError(endpoint, f"more than {MAX_PAGES} pages")

    # -- endpoints ---------------------------------------------------------------------------

    async def live_meetings(self, kind: Kind) -> list[LiveMeeting]:
        """Discovery: the live meetings (or webinars) of the account.

        Zoom wants a date range even for live meetings: yesterday to today (UTC), so a meeting
        that began before midnight is still listed.
        """
        key = f"{kind}s"
        today = datetime.now(UTC).date()
        params = {
            "type": "live",
            "from": (today - timedelta(days=1)).isoformat(),
            "to": today.isoformat(),
        }
        found: list[LiveMeeting] = []
        async for page in self.pages(f"list_{key}", f"/metrics/{key}", params, DISCOVERY_PAGE_SIZE):
            found.extend(_validated(LiveMeeting, page.get(key), f"list_{key}"))
        return found

    async def participants_qos(self, kind: Kind, meeting_id: str) -> list[Participant]:
        """Every participant's QoS in a live meeting or webinar, across all pages."""
        endpoint = endpoint_name(kind, "participants_qos")
        path = f"/metrics/{kind}s/{encode_meeting_id(meeting_id)}/participants/qos"
        found: list[Participant] = []
        async for page in self.pages(endpoint, path, {"type": "live"}, QOS_PAGE_SIZE):
            found.extend(_validated(Participant, page.get("participants"), endpoint))
        return found

    async def participant_qos(
        self, kind: Kind, meeting_id: str, participant_id: str
    ) -> Participant:
        """One participant's QoS, from the single-participant endpoint."""
        endpoint = endpoint_name(kind, "participant_qos")
        path = (
            f"/metrics/{kind}s/{encode_meeting_id(meeting_id)}"
            f"/participants/{quote(participant_id, safe='')}/qos"
        )
        payload = await self.get(endpoint, path, {"type": "live"})
        try:
            return Participant.model_validate(payload)
        except ValidationError:
            raise ZoomTransportError(
                endpoint, "the participant does not match the schema"
            ) from None


def _validated(model: type[M], items: Any, endpoint: str) -> list[M]:
    """Validate list items one by one: a malformed record is skipped and logged, not fatal."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ZoomTransportError(endpoint, "the list in the answer is not a JSON array")
    out: list[M] = []
    for index, item in enumerate(items):
        try:
            out.append(model.model_validate(item))
        except ValidationError:
            log.warning("%s: skipped record %d, which does not match the schema", endpoint, index)
    return out


def _code(payload: dict[str, Any]) -> int | None:
    code = payload.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None


def _field(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    return value[:200] if isinstance(value, str) else ""
