"""The Zoom Dashboard QoS API's endpoints and pagination, over one `Transport`.

A client is cheap and is rebuilt on every reload; what must outlive a reload (the token, the
holds, the buckets, the day's spend, the counters) is passed in by the daemon.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr, ValidationError

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.logfmt import kv
from exporter.zoom.auth import TokenProvider
from exporter.zoom.errors import (
    ZOOM_CODE_PAGE_TOKEN,
    ZoomAPIError,
    ZoomAuthError,
    ZoomForbiddenError,
    ZoomPausedError,
    ZoomTransportError,
)
from exporter.zoom.limits import Backoff, DailyBudget, Holds, RateLimiter
from exporter.zoom.models import Kind, LiveMeeting, Participant
from exporter.zoom.telemetry import ApiTelemetry, Tally
from exporter.zoom.transport import DEFAULT_BACKOFF, Transport

log = logging.getLogger(__name__)

M = TypeVar("M", LiveMeeting, Participant)

QOS_PAGE_SIZE = 10  # Zoom's cap for the participant QoS lists
DISCOVERY_PAGE_SIZE = 300
MAX_PAGES = 5_000  # the most pages of one listing: 50,000 participants at 10 a page
# Why a listing stopped before Zoom's last page (Listing.stopped).
REPEATED_TOKEN = "repeated_token"  # a next_page_token already followed: a loop
EMPTY_PAGE = "empty_page"  # a page without items that still offers a next page
PAGE_CAP = "page_cap"  # the pages the cycle granted, plus the margin, are spent


def page_cap(granted: int) -> int:
    """The pages a listing may take when the planner granted `granted`: a margin of two pages
    and a quarter for a meeting that grew since it was counted, never more than MAX_PAGES."""
    granted = max(1, granted)
    return min(MAX_PAGES, granted + max(2, granted // 4))


class Listing(list[M]):
    """The items of a paginated listing; `stopped` says why it ended before Zoom's last page
    (None: it did not), `pages` how many calls it took, `total` the size Zoom's first page
    announced (`total_records`, when present and sane)."""

    stopped: str | None = None
    pages: int = 0
    total: int | None = None


def encode_meeting_id(meeting_id: str) -> str:
    """Percent-encode an id for a URL path; UUIDs that start with / or hold // twice over."""
    once = quote(meeting_id, safe="")
    if meeting_id.startswith("/") or "//" in meeting_id:
        return quote(once, safe="")
    return once


def endpoint_name(kind: Kind, what: str) -> str:
    """Stable `endpoint` label values, e.g. meeting_participants_qos."""
    return f"{kind}_{what}"


class ZoomClient:
    """Zoom's Dashboard QoS API: discovery, the paginated QoS lists, one participant.

    Without `token`, `holds` and `telemetry` the client makes its own (tests, `probe`); the
    daemon passes the ones it keeps for its whole life.
    """

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
        clock: Clock = SYSTEM_CLOCK,
        limiter: RateLimiter | None = None,
        budget: DailyBudget | None = None,
        max_retries: int = 3,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: Callable[[], float] = random.random,
        token: TokenProvider | None = None,
        holds: Holds | None = None,
        telemetry: ApiTelemetry | None = None,
    ) -> None:
        if token is None:
            token = TokenProvider(
                oauth_url=oauth_url,
                account_id=account_id,
                client_id=client_id,
                client_secret=client_secret,
                clock=clock,
                rng=rng,
            )
        self.transport = Transport(
            session,
            token,
            api_url=api_url,
            timeout=timeout,
            clock=clock,
            limiter=limiter,
            budget=budget,
            holds=holds,
            telemetry=telemetry,
            max_retries=max_retries,
            backoff=backoff,
            rng=rng,
        )
        self._clock = clock
        self.token = token
        self.limiter = limiter
        self.budget = budget
        self.holds = self.transport.holds
        self.telemetry = self.transport.telemetry

    @property
    def requests(self) -> Tally:
        return self.telemetry.requests

    @property
    def retries(self) -> Tally:
        return self.telemetry.retries

    @property
    def rate_limited(self) -> Tally:
        return self.telemetry.rate_limited

    def paused(
        self, endpoint: str = "api"
    ) -> ZoomPausedError | ZoomAuthError | ZoomForbiddenError | None:
        return self.transport.paused(endpoint)

    async def get(self, endpoint: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        return await self.transport.get(endpoint, path, params)

    async def collect(
        self,
        endpoint: str,
        path: str,
        params: dict[str, str],
        page_size: int,
        key: str,
        model: type[M],
        max_pages: int = MAX_PAGES,
    ) -> Listing[M]:
        """Every item under `key` across all pages, following `next_page_token`, but never
        more than `max_pages` calls: the listing stops (and says why in `stopped`) at a page
        token already followed, at an empty page, or at the cap.

        A page token that expired mid-listing (code 300) restarts the listing once.
        """
        first = {**params, "page_size": str(page_size)}
        query, seen, found = first, set[str](), Listing[M]()
        restarted = False
        pages = 0
        while True:
            if pages >= max_pages:
                found.stopped = PAGE_CAP
                break
            pages += 1
            try:
                page = await self.get(endpoint, path, query)
            except ZoomAPIError as error:
                if error.code != ZOOM_CODE_PAGE_TOKEN or "next_page_token" not in query:
                    raise
                if restarted:
                    raise ZoomAPIError(
                        endpoint, 400, ZOOM_CODE_PAGE_TOKEN, "the next page token expired twice"
                    ) from None
                restarted = True
                self.telemetry.retries.add(endpoint, "page_token_expired")
                log.info(
                    "the next page token expired; listing again from the start",
                    extra=kv(endpoint=endpoint),
                )
                query, seen, found = first, set(), Listing()
                continue
            items = self._validated(model, page.get(key), endpoint)
            found.extend(items)
            total = page.get("total_records")
            if found.total is None and isinstance(total, int) and not isinstance(total, bool):
                found.total = total if 0 <= total <= MAX_PAGES * page_size else None
            token = page.get("next_page_token")
            if not isinstance(token, str) or not token:
                break
            if not items:
                found.stopped = EMPTY_PAGE
                break
            if token in seen:
                found.stopped = REPEATED_TOKEN
                break
            seen.add(token)
            query = {**first, "next_page_token": token}
        found.pages = pages
        return found

    def _validated(self, model: type[M], items: Any, endpoint: str) -> list[M]:
        """Validate list items one by one: a malformed record is skipped, counted and logged,
        not fatal; strings cut to MAX_TEXT are counted."""
        if items is None:
            return []
        if not isinstance(items, list):
            raise ZoomTransportError(endpoint, "the list in the answer is not a JSON array")
        out: list[M] = []
        context: dict[str, int] = {}
        for item in items:
            try:
                out.append(model.model_validate(item, context=context))
            except ValidationError:
                self.telemetry.dropped.add("schema", f"{endpoint}: a record of the wrong shape")
        self.telemetry.truncated += context.get("cut", 0)
        return out

    # -- endpoints ---------------------------------------------------------------------------

    async def live_meetings(self, kind: Kind, max_pages: int = MAX_PAGES) -> Listing[LiveMeeting]:
        """Discovery: the live meetings (or webinars) of the account.

        Zoom wants a date range even for live meetings: yesterday to today (UTC), so a meeting
        that began before midnight is still listed.
        """
        key = f"{kind}s"
        today = datetime.fromtimestamp(self._clock.time(), UTC).date()
        params = {
            "type": "live",
            "from": (today - timedelta(days=1)).isoformat(),
            "to": today.isoformat(),
        }
        return await self.collect(
            f"list_{key}",
            f"/metrics/{key}",
            params,
            DISCOVERY_PAGE_SIZE,
            key,
            LiveMeeting,
            max_pages,
        )

    async def participants_qos(
        self, kind: Kind, meeting_id: str, max_pages: int = MAX_PAGES
    ) -> Listing[Participant]:
        """Every participant's QoS in a live meeting or webinar, across all pages (at most
        `max_pages`)."""
        endpoint = endpoint_name(kind, "participants_qos")
        path = f"/metrics/{kind}s/{encode_meeting_id(meeting_id)}/participants/qos"
        return await self.collect(
            endpoint, path, {"type": "live"}, QOS_PAGE_SIZE, "participants", Participant, max_pages
        )

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
        context: dict[str, int] = {}
        try:
            return Participant.model_validate(payload, context=context)
        except ValidationError:
            raise ZoomTransportError(
                endpoint, "the participant does not match the schema"
            ) from None
        finally:
            self.telemetry.truncated += context.get("cut", 0)
