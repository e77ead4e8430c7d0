"""The names this server answers to (`core.hosts`), as a table: each `Host` and `Origin` a
client can send, accepted or refused, and why. No I/O: the end-to-end checks are in
tests/test_e2e_web_trust.py and the hostile corpus."""

from __future__ import annotations

import pytest

from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import check_single_credentials
from supervisor.core.hosts import (
    Authority,
    HostError,
    check_host,
    check_origin,
    check_target,
    normalize_name,
    parse_authority,
)

ALLOWED = frozenset({"fsup.lan", "10.0.0.7", "[fd00::7]"})

# (Host value, the name it is read as) for every Host that names this server.
ACCEPTED = [
    ("127.0.0.1:7890", "127.0.0.1"),
    ("127.0.0.1", "127.0.0.1"),
    ("localhost:7890", "localhost"),
    ("localhost", "localhost"),
    ("[::1]:7890", "[::1]"),
    ("[::1]", "[::1]"),
    ("[0:0:0:0:0:0:0:1]:1", "[::1]"),  # the same address, written out
    ("127.8.9.10:65535", "127.8.9.10"),  # all of 127.0.0.0/8 is loopback
    ("LOCALHOST:7890", "localhost"),  # names are compared without case
    ("LocalHost", "localhost"),
    ("localhost.:7890", "localhost"),  # one trailing dot: the same name, fully qualified
    ("127.0.0.1.:7890", "127.0.0.1"),  # as browsers read it
    ("fsup.lan:7890", "fsup.lan"),  # listed in http.allowed_hosts
    ("FSUP.lan.", "fsup.lan"),
    ("10.0.0.7:80", "10.0.0.7"),
    ("[FD00::7]:7890", "[fd00::7]"),
]

# (Host value, a fragment of the refusal's message).
REFUSED = [
    ("evil.example:7890", "is not a name of this server"),  # the rebinding attack itself
    ("evil.example", "is not a name of this server"),
    ("localhost.evil.example", "is not a name of this server"),
    ("127.0.0.1.evil.example", "is not a name of this server"),
    ("sub.localhost", "is not a name of this server"),
    ("10.0.0.8", "is not a name of this server"),
    ("0.0.0.0:7890", "is not a name of this server"),
    ("2130706433", "is not a name of this server"),  # 127.0.0.1 as one number
    ("0x7f.0.0.1", "is not a name of this server"),
    ("127.000.000.001", "is not a name of this server"),
    ("[::ffff:127.0.0.1]", "is not a name of this server"),
    ("user@127.0.0.1:7890", "user part"),
    ("127.0.0.1:7890@evil.example", "user part"),
    ("@localhost", "user part"),
    ("localhost..", "labels"),  # two trailing dots: an empty label
    (".localhost", "labels"),
    ("local_host-", "labels"),
    ("[fe80::1%eth0]:7890", "IPv6 zone"),
    ("[fe80::1%25eth0]", "IPv6 zone"),
    ("[::1", "closing ']'"),
    ("[::1]x", "only ':<port>'"),
    ("[127.0.0.1]", "not an IPv6 address"),
    ("::1", "in brackets"),
    ("localhost:7890:1", "in brackets"),
    ("localhost:0", "out of range"),
    ("localhost:65536", "out of range"),
    ("localhost:99999", "out of range"),
    ("localhost:123456", "not a number"),
    ("localhost:http", "not a number"),
    ("localhost:-1", "not a number"),
    ("localhost:+80", "not a number"),
    ("localhost: 80", "not a number"),
    ("localhost:", "empty"),
    ("", "empty"),
    (":7890", "1 to 253 characters"),
    ("l\u0131calhost", "not ASCII"),  # dotless i: lower() must not fold it into 'localhost'
    ("localhost\u3002", "not ASCII"),  # an ideographic full stop
    ("a" * 400, "longer than"),
    ("a" * 254, "1 to 253 characters"),
    ("a" * 64 + ".lan", "labels"),
]


@pytest.mark.parametrize(("value", "name"), ACCEPTED)
def test_hosts_that_name_this_server_are_accepted(value: str, name: str) -> None:
    assert check_host([value], ALLOWED).name == name


@pytest.mark.parametrize(("value", "fragment"), REFUSED)
def test_other_hosts_are_forbidden_naming_them(value: str, fragment: str) -> None:
    with pytest.raises(FsupError) as info:
        check_host([value], ALLOWED)
    error = info.value
    assert error.code == "FORBIDDEN" and error.status == 403
    assert fragment in error.message, error.message
    assert error.details == {"header": "Host", "host": value[:100]}
    if value:
        assert repr(value[:40])[1:-1] in error.message  # it names the Host


@pytest.mark.parametrize(
    ("values", "fragment"),
    [([], "has no Host header"), (["localhost", "localhost"], "has 2 Host headers")],
)
def test_no_host_or_two_hosts_are_forbidden(values: list[str], fragment: str) -> None:
    with pytest.raises(FsupError) as info:
        check_host(values, ALLOWED)
    assert info.value.code == "FORBIDDEN" and fragment in info.value.message


def test_a_listed_name_is_accepted_only_once_listed() -> None:
    with pytest.raises(FsupError):
        check_host(["fsup.lan:7890"], frozenset())
    assert check_host(["fsup.lan:7890"], frozenset({"fsup.lan"})) == Authority("fsup.lan", 7890)


def test_the_refusal_says_what_to_add_to_the_config() -> None:
    with pytest.raises(FsupError) as info:
        check_host(["Fsup.Example.:7890"], frozenset())
    assert "http.allowed_hosts" in info.value.message
    assert "'fsup.example'" in info.value.message


@pytest.mark.parametrize(
    ("text", "authority"),
    [
        ("localhost:7890", Authority("localhost", 7890)),
        ("[::1]", Authority("[::1]", None)),
        ("Example.COM.:1", Authority("example.com", 1)),
        ("x_y.lan", Authority("x_y.lan", None)),
    ],
)
def test_authorities_are_normalized(text: str, authority: Authority) -> None:
    assert parse_authority(text) == authority


@pytest.mark.parametrize(
    ("text", "name"),
    [("::1", "[::1]"), ("[::1]", "[::1]"), ("FSUP.lan.", "fsup.lan"), ("10.0.0.7", "10.0.0.7")],
)
def test_configured_names_are_normalized_like_hosts(text: str, name: str) -> None:
    assert normalize_name(text) == name


@pytest.mark.parametrize("text", ["fsup.lan:7890", "fe80::1%eth0", "a b", "", "[::1"])
def test_bad_configured_names_are_refused(text: str) -> None:
    with pytest.raises(HostError):
        normalize_name(text)


@pytest.mark.parametrize(
    "values",
    [
        [],  # no Origin: a same-origin GET, curl, the CLI
        ["http://127.0.0.1:7890"],
        ["http://localhost:7890"],
        ["http://[::1]:7890"],
        ["https://localhost"],
        ["HTTP://LOCALHOST:7890"],
        ["http://fsup.lan:8080"],
    ],
)
def test_origins_of_this_server_may_bootstrap(values: list[str]) -> None:
    check_origin(values, ALLOWED)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        (["http://evil.example:7890"], "is not this server"),
        (["null"], "opaque origin"),
        (["Null"], "http://host"),
        (["file://"], "http://host"),
        (["ftp://localhost"], "http://host"),
        (["localhost:7890"], "http://host"),
        (["http://localhost:7890/"], "no path"),
        (["http://localhost:7890?x"], "no path"),
        (["http://user@localhost:7890"], "user part"),
        (["http://[fe80::1%eth0]"], "IPv6 zone"),
        (["http://localhost:70000"], "out of range"),
        (["http://"], "empty"),
        (["http://localhost", "http://localhost"], "2 Origin headers"),
    ],
)
def test_other_origins_may_not_bootstrap(values: list[str], fragment: str) -> None:
    with pytest.raises(FsupError) as info:
        check_origin(values, ALLOWED)
    assert info.value.code == "FORBIDDEN" and fragment in info.value.message, info.value.message


@pytest.mark.parametrize(
    "names",
    [
        ["X-MUXI-Signature", "x-muxi-signature"],
        ["X-MUXI-Timestamp", "Host", "X-MUXI-Timestamp"],
        ["X-MUXI-Key-ID", "X-Muxi-Key-Id"],
        ["Authorization", "authorization"],
    ],
)
def test_a_duplicated_credential_header_is_unauthorized(names: list[str]) -> None:
    with pytest.raises(FsupError) as info:
        check_single_credentials(names)
    assert info.value.code == "UNAUTHORIZED" and "2 times" in info.value.message
    assert info.value.details["header"].lower() == names[0].lower()


def test_single_credential_headers_pass() -> None:
    check_single_credentials(
        ["Host", "X-MUXI-Key-ID", "X-MUXI-Timestamp", "X-MUXI-Signature", "Accept", "Accept"]
    )
    check_single_credentials(["Authorization", "Cookie", "Cookie"])


# An absolute-form request target's authority overrides the Host (RFC 9112 3.2.2).
@pytest.mark.parametrize(
    "target",
    ["/api/v1/x", "http://127.0.0.1:7890/api/v1/x", "HTTP://LocalHost./ui/", "https://fsup.lan"],
)
def test_a_target_that_names_this_server_or_none_passes(target: str) -> None:
    check_target(target, ALLOWED)


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("http://evil.example:7890/api/v1/x", "not this server"),
        ("http://127.0.0.1@evil.example/api/v1/x", "user part"),
        ("ftp://127.0.0.1/api/v1/x", "neither a path nor"),
        ("api/v1/x", "neither a path nor"),
        ("http:///api/v1/x", "empty"),
    ],
)
def test_a_target_that_names_another_server_is_forbidden(target: str, fragment: str) -> None:
    with pytest.raises(FsupError) as info:
        check_target(target, ALLOWED)
    assert info.value.status == 403 and fragment in info.value.message
    assert info.value.details == {"target": target}
