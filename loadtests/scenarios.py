"""Scenario names, locust request names and the mixed profile: shared by the locustfile and the
driver (which must not import locust: importing it monkey-patches the process with gevent)."""

from __future__ import annotations

import contextlib

DIVERSE_COUNT = 3

# Scenario = locust tag of the task(s); "mixed" = no tag, every task with its weight.
COLORIZE_256, COLORIZE_12MP, DIVERSE, ASYNC, MIXED = (
    "colorize256", "colorize12mp", "diverse", "async", "mixed",
)  # fmt: skip
SCENARIOS = (COLORIZE_256, COLORIZE_12MP, DIVERSE, ASYNC, MIXED)
MIX_WEIGHTS = {COLORIZE_256: 12, COLORIZE_12MP: 1, DIVERSE: 3, ASYNC: 3}

# The rows of locust's statistics (name; the method is locust's "Type" column).
REQ_COLORIZE_256 = "/colorize [256px]"
REQ_COLORIZE_12MP = "/colorize [12MP]"
REQ_DIVERSE = f"/colorize/diverse [256px x{DIVERSE_COUNT}]"
REQ_ASYNC_SUBMIT = "/colorize [async 256px]"
REQ_ASYNC_POLL = "/jobs/{id}"
REQ_ASYNC_RESULT = "/jobs/{id}/result"
REQ_ASYNC_JOB = "async job [256px]"  # type JOB: submit -> polls -> result, as one request

# The row that stands for a scenario, and images produced per request of each row.
PRIMARY = {
    COLORIZE_256: REQ_COLORIZE_256,
    COLORIZE_12MP: REQ_COLORIZE_12MP,
    DIVERSE: REQ_DIVERSE,
    ASYNC: REQ_ASYNC_JOB,
}
IMAGES_PER_REQUEST = {
    REQ_COLORIZE_256: 1,
    REQ_COLORIZE_12MP: 1,
    REQ_DIVERSE: DIVERSE_COUNT,
    REQ_ASYNC_JOB: 1,
}


def server_timing(header: str | None) -> dict[str, float]:
    """`queue;dur=1.2, compute;dur=30.5` -> {"queue": 1.2, "compute": 30.5} (ms)."""
    out: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                with contextlib.suppress(ValueError):
                    out[name.strip()] = float(value)
    return out
