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
MAX_PAGES = 10_000  # a guard against a server that never stops paginating


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
    ) -> list[M]:
        """Every item under `key` across all pages, following `next_page_token`.

        A page token that expired mid-listing (code 300) restarts the listing once.
        """
        first = {**params, "page_size": str(page_size)}
        query, seen, found = first, set[str](), list[M]()
        restarted = False
        while len(seen) < MAX_PAGES:
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
                query, seen, found = first, set(), []
                continue
            found.extend(_validated(model, page.get(key), endpoint))
            token = page.get("next_page_token")
            if not isinstance(token, str) or not token:
                return found
            if token in seen:
                raise ZoomTransportError(endpoint, "pagination repeats a next_page_token")
            seen.add(token)
            query = {**first, "next_page_token": token}
        raise ZoomTransportError(endpoint, f"more than {MAX_PAGES} pages")

    # -- endpoints ---------------------------------------------------------------------------

    async def live_meetings(self, kind: Kind) -> list[LiveMeeting]:
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
            f"list_{key}", f"/metrics/{key}", params, DISCOVERY_PAGE_SIZE, key, LiveMeeting
        )

    async def participants_qos(self, kind: Kind, meeting_id: str) -> list[Participant]:
        """Every participant's QoS in a live meeting or webinar, across all pages."""
        endpoint = endpoint_name(kind, "participants_qos")
        path = f"/metrics/{kind}s/{encode_meeting_id(meeting_id)}/participants/qos"
        return await self.collect(
            endpoint, path, {"type": "live"}, QOS_PAGE_SIZE, "participants", Participant
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
            log.warning(
                "skipped a record that does not match the schema",
                extra=kv(endpoint=endpoint, record=index),
            )
    return out
