"""Settings of the labelling app (from ``[labeling]`` in rlhf.toml, overridden by ``rlhf label serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DEFAULT_SKIP_REASONS = (
    "Prompt unclear or broken",
    "Needs expertise I lack",
    "Harmful or disturbing content",
    "Responses identical or unreadable",
    "Other",
)


@dataclass(frozen=True)
class LabelingSettings:
    title: str = "rlhf-pipeline labelling"
    guidelines_markdown: str = ""
    lease: timedelta = timedelta(minutes=30)
    session_lifetime: timedelta = timedelta(hours=12)
    idle_seconds: int = 60  # no key or mouse for this long: the item's active-time clock stops
    skip_reasons: tuple[str, ...] = DEFAULT_SKIP_REASONS
    secure_cookies: bool = False
    # Pairs (K = 2): a preference needs its strength (much better, better, slightly better) to be saved; else
    # the strength is optional and a preference without one is stored without scores (unknown strength).
    require_strength: bool = False
    login_attempts: int = 5  # failed logins per name within login_window before a lockout
    login_window: timedelta = timedelta(minutes=10)
    login_lockout: timedelta = timedelta(minutes=1)
    # Addresses of reverse proxies whose X-Forwarded-For is believed (comma-separated, as uvicorn takes them); empty:
    # none, so a client cannot pick the address the login throttle counts it under.
    trusted_proxies: str = ""
