"""Hostile query parameters on every endpoint that reads one (`lines`, `stream`, `follow`,
`db`, `limit`, `offset`, `sort`, `q`, `level`, `cursor`): negative, huge, Unicode digits that
Python's `int` accepts ('٣', '１２') or refuses after `isdigit` said yes ('²'), Python-only
syntax ('1_0'), control bytes, and a valid value repeated with an invalid one (the invalid one
must not be ignored). Each must be a 400 `INVALID_REQUEST` naming the parameter. An empty value
may mean "absent" (then the answer is a 200) or a 400: both are clear."""

from __future__ import annotations

import pytest
from hostile_contract import assert_error
from hostile_kit import Target

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)

# endpoint -> (path template, auth)
ENDPOINTS = {
    "logs": ("/rpc/formations/alpha/logs", "signed"),
    "audit": ("/rpc/server/logs", "signed"),
    "download": ("/rpc/formations/alpha/download", "signed"),
    "results": ("/api/v1/searches/{search}/results", "bearer"),
    "applogs": ("/api/v1/logs", "bearer"),
    "nodes": ("/api/v1/nodes", "bearer"),
}

SUPERSCRIPT_2 = "%C2%B2"  # '²': str.isdigit() says yes, int() says no
ARABIC_3 = "%D9%A3"  # '٣': int() reads it as 3
FULLWIDTH_12 = "%EF%BC%91%EF%BC%92"  # '１２': int() reads it as 12
HUGE = "9" * 30
DIGITS_5000 = "9" * 5000

# (endpoint, raw query, parameter the error must name)
BAD_QUERIES: list[tuple[str, str, str]] = [
    ("logs", "lines=-1", "lines"),
    ("logs", f"lines={HUGE}", "lines"),
    ("logs", f"lines={DIGITS_5000}", "lines"),
    ("logs", f"lines={SUPERSCRIPT_2}", "lines"),
    ("logs", f"lines={ARABIC_3}", "lines"),
    ("logs", f"lines={FULLWIDTH_12}", "lines"),
    ("logs", "lines=1_0", "lines"),
    ("logs", "lines=1e3", "lines"),
    ("logs", "lines=0x10", "lines"),
    ("logs", "lines=%00", "lines"),
    ("logs", "lines=5&lines=-1", "lines"),
    ("logs", "stream=STDOUT", "stream"),
    ("logs", "stream=stdout%00", "stream"),
    ("logs", "stream=stdin", "stream"),
    ("logs", "stream=stdout&stream=evil", "stream"),
    ("logs", "follow=maybe", "follow"),
    ("logs", "follow=%D9%A1", "follow"),
    ("logs", "follow=2", "follow"),
    ("logs", "follow=false&follow=maybe", "follow"),
    ("audit", "lines=0", "lines"),
    ("audit", "lines=-5", "lines"),
    ("audit", f"lines={ARABIC_3}", "lines"),
    ("audit", f"lines={SUPERSCRIPT_2}", "lines"),
    ("download", "db=maybe", "db"),
    ("download", "db=%C2%B9", "db"),
    ("download", "db=false&db=maybe", "db"),
    ("results", "limit=0", "limit"),
    ("results", "limit=-1", "limit"),
    ("results", "limit=501", "limit"),
    ("results", f"limit={SUPERSCRIPT_2}", "limit"),
    ("results", f"limit={ARABIC_3}", "limit"),
    ("results", f"limit={HUGE}", "limit"),
    ("results", "limit=1&limit=0", "limit"),
    ("results", "offset=-1", "offset"),
    ("results", "offset=10000001", "offset"),
    ("results", f"offset={FULLWIDTH_12}", "offset"),
    ("results", "offset=1_000", "offset"),
    ("results", "sort=evil", "sort"),
    ("results", "sort=SCORE", "sort"),
    ("results", "sort=score&sort=evil", "sort"),
    ("results", "q=" + "q" * 201, "q"),
    ("applogs", "level=trace", "level"),
    ("applogs", "level=info&level=evil", "level"),
    ("applogs", "level=%00", "level"),
    ("applogs", "limit=0", "limit"),
    ("applogs", "limit=1001", "limit"),
    ("applogs", f"limit={ARABIC_3}", "limit"),
    ("applogs", "cursor=-1", "cursor"),
    ("applogs", f"cursor={HUGE}", "cursor"),
    ("applogs", f"cursor={SUPERSCRIPT_2}", "cursor"),
    ("applogs", "cursor=abc", "cursor"),
    ("nodes", "limit=-1", "limit"),
    ("nodes", f"limit={ARABIC_3}", "limit"),
    ("nodes", "limit=1001", "limit"),
    ("nodes", "offset=1000001", "offset"),
]


def _target_path(target: Target, endpoint: str, query: str) -> tuple[str, str]:
    path, auth = ENDPOINTS[endpoint]
    return path.format(search=target.baseline_search) + "?" + query, auth


@pytest.mark.parametrize(
    ("endpoint", "query", "parameter"),
    [pytest.param(e, q, p, id=f"{e}-{q[:40]}") for e, q, p in BAD_QUERIES],
)
def test_bad_query_parameter_is_refused(
    target: Target, endpoint: str, query: str, parameter: str
) -> None:
    path, auth = _target_path(target, endpoint, query)
    reply = target.request("GET", path, auth=auth)
    error = assert_error(reply, 400, "INVALID_REQUEST")
    assert error["details"].get("parameter") == parameter, error


EMPTY_QUERIES = [
    ("logs", "lines="),
    ("logs", "stream="),
    ("results", "limit="),
    ("results", "sort="),
    ("applogs", "level="),
    ("applogs", "cursor="),
    ("nodes", "offset="),
]


@pytest.mark.parametrize(
    ("endpoint", "query"), [pytest.param(e, q, id=f"{e}-{q}") for e, q in EMPTY_QUERIES]
)
def test_empty_query_parameter_is_absent_or_refused(
    target: Target, endpoint: str, query: str
) -> None:
    """`?lines=`: either the default (as if absent) or a clear 400; never anything else."""
    path, auth = _target_path(target, endpoint, query)
    reply = target.request("GET", path, auth=auth)
    if reply.status == 200:
        absent = target.request("GET", path.rsplit("?", 1)[0], auth=auth)
        assert absent.status == 200 and set(reply.json()) == set(absent.json())
    else:
        assert_error(reply, 400, "INVALID_REQUEST")
