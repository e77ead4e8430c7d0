"""The hostile corpus's toolkit: raw HTTP on sockets, signing, the contract's error checks, and
a snapshot of everything a hostile request must leave untouched.

Every request of the corpus goes over a raw socket, so that nothing (an HTTP library's
validation, re-encoding or normalisation) smooths over what the client really sends or what
fsup really answers on the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from helpers import REPO, Server, formation_processes, nasty_bundle, wait_for

from supervisor.client import RpcClient
from supervisor.hmac_auth import sign

# A name planted by traversal and absolute-path cases; it must never appear outside the home.
PLANT = f"fsup-hostile-plant-{uuid.uuid4().hex[:10]}"
# An app-level answer (a 4xx in the contract's shape) must arrive within this many seconds.
BOUND_S = 5.0
# How long a request may take at all before the case fails as "no answer".
NO_ANSWER_S = 20.0
SEARCH_KEYWORD = "hostile baseline"
HOSTILE_UA = "fsup-hostile-corpus"

Headers = Sequence[tuple[str, str]] | Mapping[str, str]


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1


@dataclass
class Reply:
    """One HTTP response read off a raw socket (status None: the server closed the connection
    without answering)."""

    status: int | None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    elapsed: float = 0.0
    raw: bytes = b""
    closed: bool | None = None  # seen closing after the response (None: not watched)
    extra: bytes = b""  # anything the server sent after the first response

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        head = self.raw.split(b"\r\n\r\n", 1)[0][:600]
        return f"status={self.status} after {self.elapsed:.2f}s head={head!r} body={self.body[:300]!r}"


class NoAnswer(AssertionError):
    """The server neither answered nor closed within the bound."""


class Conn:
    """Buffered reads from a socket with one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.eof = False
        self.raw = b""

    def fill(self) -> bool:
        if self.eof:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer("fsup did not answer (or close) within the bound")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        except TimeoutError:
            raise NoAnswer("fsup did not answer (or close) within the bound") from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.raw += data
        return True

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buf:
            if not self.fill():
                return None
        head, _, self.buf = self.buf.partition(marker)
        return head

    def exact(self, count: int) -> bytes | None:
        while len(self.buf) < count:
            if not self.fill():
                return None
        data, self.buf = self.buf[:count], self.buf[count:]
        return data

    def rest(self) -> bytes:
        while self.fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def wait_eof(self, seconds: float) -> bool:
        """True when the server closes within `seconds` (what it sends meanwhile is kept)."""
        self.deadline = time.monotonic() + seconds
        try:
            while self.fill():
                pass
        except NoAnswer:
            return False
        return True


def read_response(conn: Conn, head_only: bool) -> Reply:
    while True:
        head = conn.until(b"\r\n\r\n")
        if head is None:
            return Reply(None, raw=conn.raw)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return Reply(None, reason=f"not an HTTP response: {lines[0][:100]!r}", raw=conn.raw)
        status = int(parts[1])
        headers = [
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        ]
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends: the final answer follows
        reply = Reply(status, parts[2] if len(parts) > 2 else "", headers)
        break
    kind = (reply.header("content-type") or "").lower()
    if head_only or status in (204, 304):
        pass
    elif "chunked" in (reply.header("transfer-encoding") or "").lower():
        reply.body = _read_chunked(conn, stream="text/event-stream" in kind)
    elif reply.header("content-length") is not None:
        length = int(reply.header("content-length") or "0")
        reply.body = conn.exact(length) or b""
    elif "text/event-stream" in kind:
        reply.body = conn.buf
    else:
        reply.body = conn.rest()
    reply.raw = conn.raw
    return reply


def _read_chunked(conn: Conn, stream: bool) -> bytes:
    body = b""
    if stream:  # an event stream never ends: take what the first moment brings
        conn.deadline = min(conn.deadline, time.monotonic() + 0.5)
        try:
            while b"\n\n" not in body and conn.fill():
                body = conn.buf
        except NoAnswer:
            pass
        return conn.buf
    while True:
        size_line = conn.until(b"\r\n")
        if size_line is None:
            return body
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            conn.until(b"\r\n")  # (no trailers from fsup)
            return body
        body += conn.exact(size) or b""
        conn.until(b"\r\n")


def connect(addr: tuple[str, int], timeout: float = NO_ANSWER_S) -> socket.socket:
    sock = socket.create_connection(addr, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send all of `data`; False when the server closed or reset the connection first."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        return False
    return True


def exchange(
    addr: tuple[str, int],
    data: bytes | Iterable[tuple[bytes, float]],
    *,
    timeout: float = NO_ANSWER_S,
    head_only: bool = False,
    shut_write: bool = False,
    watch_close: float | None = None,
) -> Reply:
    """Send `data` (bytes, or (piece, pause-after) pairs for a trickle) on a fresh connection
    and read one response. `watch_close`: then wait this long to see whether fsup closes."""
    start = time.monotonic()
    with connect(addr, timeout) as sock:
        pieces = [(data, 0.0)] if isinstance(data, bytes) else data
        for piece, pause in pieces:
            if not send_quietly(sock, piece):
                break
            if pause:
                time.sleep(pause)
        if shut_write:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        conn = Conn(sock, start + timeout)
        reply = read_response(conn, head_only)
        reply.elapsed = time.monotonic() - start
        if watch_close is not None and reply.status is not None:
            reply.closed = conn.wait_eof(watch_close)
            reply.extra = conn.buf
            reply.raw = conn.raw
        return reply


def request_bytes(
    method: str,
    target: str | bytes,
    headers: Headers = (),
    body: bytes = b"",
    *,
    host: str | None = "127.0.0.1",
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A request on the wire: `target` exactly as given, Host and Content-Length added unless
    the caller sets them (or passes host=None / length=False)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    names = {name.lower() for name, _ in pairs}
    if host is not None and "host" not in names:
        pairs.insert(0, ("Host", host))
    if length and body and "content-length" not in names and "transfer-encoding" not in names:
        pairs.append(("Content-Length", str(len(body))))
    if "user-agent" not in names:
        pairs.append(("User-Agent", HOSTILE_UA))
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    head = method.encode("latin-1") + b" " + raw_target + b" " + version.encode() + b"\r\n"
    head += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in pairs)
    return head + b"\r\n" + body


def rfc3339(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Signer:
    """The seed's HMAC scheme, with every signed field overridable for tampering."""

    key_id: str
    secret_key: str

    def headers(
        self,
        method: str,
        target: str | bytes,
        body: bytes = b"",
        *,
        timestamp: str | None = None,
        key_id: str | None = None,
        sign_method: str | None = None,
        sign_target: str | bytes | None = None,
        sign_body: bytes | None = None,
        signature: str | None = None,
    ) -> list[tuple[str, str]]:
        stamp = rfc3339() if timestamp is None else timestamp
        path = sign_target if sign_target is not None else target
        raw_path = path if isinstance(path, bytes) else path.encode("latin-1")
        mac = sign(self.secret_key, sign_method or method, raw_path, stamp,
                   body if sign_body is None else sign_body)
        return [
            ("X-MUXI-Key-ID", self.key_id if key_id is None else key_id),
            ("X-MUXI-Timestamp", stamp),
            ("X-MUXI-Signature", mac if signature is None else signature),
        ]


# --------------------------------------------------------------------------------------------
# The contract's answers


def contract_error(reply: Reply) -> dict[str, Any]:
    """The `error` object of a contract-shaped body, or an AssertionError saying what it is."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        raise AssertionError(f"not a JSON error body: {reply.describe()}") from None
    assert isinstance(body, dict) and set(body) == {"error", "code", "message"}, \
        f"not the contract's shape: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"error is not an object: {body!r}"
    assert (body["code"], body["message"]) == (error.get("code"), error.get("message")), \
        f"the top-level mirror (for MUXI's SDKs) differs from the error: {body!r}"
    assert isinstance(error.get("code"), str) and error["code"], f"no error code: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"no message: {body!r}"
    assert isinstance(error.get("details"), dict), f"details is not an object: {body!r}"
    return error


def _as_set(value: int | str | Iterable[Any] | None) -> set[Any] | None:
    if value is None:
        return None
    if isinstance(value, int | str):
        return {value}
    return set(value)


def assert_error(
    reply: Reply,
    status: int | Iterable[int],
    code: str | Iterable[str] | None = None,
    *,
    within: float = BOUND_S,
) -> dict[str, Any]:
    """A clear app-level refusal: the status, the contract's shape, the code, in time."""
    statuses, codes = _as_set(status), _as_set(code)
    assert reply.status is not None, f"fsup closed without answering: {reply.describe()}"
    assert reply.status in (statuses or set()), (
        f"expected HTTP {sorted(statuses or [])}{' ' + str(sorted(codes)) if codes else ''}, "
        f"got {reply.describe()}"
    )
    error = contract_error(reply)
    if codes is not None:
        assert error["code"] in codes, f"expected code {sorted(codes)}, got {error}"
    assert reply.elapsed <= within, f"the refusal took {reply.elapsed:.2f}s (bound {within}s)"
    return error


def assert_unparseable_refused(
    reply: Reply, statuses: Iterable[int] = (400,), *, within: float = BOUND_S
) -> None:
    """Refusal of HTTP that cannot be parsed: Hypercorn's bodiless 400 (or 413/414/431) is
    accepted here, and so is the contract's shape; a bare close is not an answer."""
    allowed = set(statuses)
    assert reply.status is not None, f"fsup closed without answering: {reply.describe()}"
    assert reply.status in allowed, f"expected HTTP {sorted(allowed)}, got {reply.describe()}"
    if reply.body.strip():
        contract_error(reply)
    assert reply.elapsed <= within, f"the refusal took {reply.elapsed:.2f}s (bound {within}s)"


# --------------------------------------------------------------------------------------------
# The target: one fsup with a small fleet, and the snapshot of what must not change


FORMATION_FIELDS = ("id", "version", "status", "pid", "port", "restart_count", "versions",
                    "update_in_progress", "desired", "healthy")
VOLATILE_HOME = ("server/logs/", "server/state.db", "fsup-test.log")


@dataclass
class Snapshot:
    formations: dict[str, dict[str, Any]]
    processes: dict[int, str]
    files: dict[str, str]
    outside: set[str]
    searches: dict[str, Any]
    tracebacks: int


def _digest(path: Path) -> str:
    try:
        if path.is_symlink():
            return "symlink->" + os.readlink(path)
        if path.is_dir():
            return "dir"
        if not path.is_file():
            return "special"
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


class Target:
    """One real fsup with formations and a search, plus what a hostile case needs."""

    def __init__(self, root: Path, fleet: Sequence[str]) -> None:
        self.root = root
        self.home = root / "muxi"
        self.home.mkdir()
        self.canary_dir = root / "canary"
        self.canary_dir.mkdir()
        self.fleet = tuple(fleet)
        self.server = Server(self.home)
        self.deaths: list[str] = []
        self.extra_checks: list[Callable[[], list[str]]] = []
        self.baseline_search = ""
        self.token = ""

    # ---- life

    def _connect_clients(self) -> None:
        creds = json.loads((self.home / "server" / "credentials.json").read_text())
        self.signer = Signer(creds["key_id"], creds["secret_key"])
        self.rpc = RpcClient(self.server.url, creds["key_id"], creds["secret_key"], timeout=30)
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=10)
        self.token = self.http.get("/api/v1/auth/bootstrap").json()["token"]

    def _close_clients(self) -> None:
        for client in (getattr(self, "rpc", None), getattr(self, "http", None)):
            if client is not None:
                client.close()

    def launch(self) -> Target:
        self.server.start()
        self._connect_clients()
        for formation_id in self.fleet:
            self.rpc.deploy(nasty_bundle(formation_id, search={"path": "/search"}))
        created = self.api("POST", "/searches", {"keyword": SEARCH_KEYWORD, "autostart": True})
        self.baseline_search = created["search"]["id"]
        wait_for(lambda: self.api("GET", f"/searches/{self.baseline_search}")["search"]["state"]
                 in ("complete", "stopped"))
        return self

    def close(self) -> tuple[int, list[int]]:
        """Stop fsup; return its exit code and the pids of formation processes left behind."""
        self._close_clients()
        code = self.server.stop() if self.server.proc is not None else 0
        leftovers = formation_processes(self.home)
        for proc in leftovers:
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        return code, [p.pid for p in leftovers]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    @property
    def host_header(self) -> str:
        return self.url.removeprefix("http://")

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"/api/v1{path}", json=body,
                                     headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()
        return response.json()

    # ---- sending

    def check_secrets(self, data: bytes) -> None:
        """No answer of fsup, to anyone, may carry its bearer token or its HMAC secret."""
        assert self.token.encode() not in data, "a response carried fsup's bearer token"
        assert self.signer.secret_key.encode() not in data, "a response carried the HMAC secret"

    def send(self, data: bytes | Iterable[tuple[bytes, float]], **options: Any) -> Reply:
        reply = exchange(self.addr, data, **options)
        self.check_secrets(reply.raw)
        return reply

    def request(
        self,
        method: str,
        target: str | bytes,
        headers: Headers = (),
        body: bytes = b"",
        *,
        auth: str = "none",
        **options: Any,
    ) -> Reply:
        """One request; auth: none, bearer (the /api/v1 token) or signed (HMAC over exactly
        `target` and `body`)."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if auth == "bearer":
            pairs.append(("Authorization", f"Bearer {self.token}"))
        elif auth == "signed":
            pairs += self.signer.headers(method, target, body)
        data = request_bytes(method, target, pairs, body, host=self.host_header)
        return self.send(data, **options)

    # ---- snapshot

    def formation_pids(self) -> dict[str, int]:
        return {f["id"]: f["pid"] for f in self.rpc.call("GET", "/rpc/formations")["formations"]}

    def snapshot(self) -> Snapshot:
        formations = {
            f["id"]: {k: f.get(k) for k in FORMATION_FIELDS}
            for f in self.rpc.call("GET", "/rpc/formations")["formations"]
        }
        processes = {}
        for proc in formation_processes(self.home):
            try:
                processes[proc.pid] = " ".join(proc.cmdline())[:80]
            except Exception:  # noqa: BLE001 - it may have just gone
                continue
        files = {}
        for path in sorted(self.home.rglob("*")):
            rel = path.relative_to(self.home).as_posix() + ("/" if path.is_dir() else "")
            if rel.startswith(VOLATILE_HOME):
                continue
            files[rel] = _digest(path)
        searches = {s["id"]: s for s in self.api("GET", "/searches")["searches"]}
        log_text = (self.home / "fsup-test.log").read_text(errors="replace")
        return Snapshot(formations, processes, files, self.outside(), searches,
                        log_text.count("Traceback (most recent call last)"))

    def outside(self) -> set[str]:
        """Names outside the home where a planted file could land."""
        found = {p.as_posix() for p in self.root.iterdir() if p.name not in ("muxi", "canary")}
        found |= {p.as_posix() for p in self.canary_dir.rglob("*")}
        for folder in (Path("/tmp"), Path("/"), REPO, self.root.parent, Path.cwd()):
            try:
                found |= {p.as_posix() for p in folder.glob(PLANT + "*")}
            except OSError:
                continue
        return found

    def verify(self, before: Snapshot) -> list[str]:
        """What changed or broke since `before` (empty: nothing)."""
        problems: list[str] = []
        try:
            health = self.http.get("/health", timeout=BOUND_S)
            if health.status_code != 200 or health.json() != {"status": "healthy"}:
                problems.append(f"GET /health answered {health.status_code} {health.text[:200]}")
        except httpx.HTTPError as exc:
            problems.append(f"GET /health failed after the case: {exc!r}")
        if problems and self.server.proc is not None:
            try:  # an fsup on its way out: say so, rather than "connection refused"
                self.server.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        if not self.alive():
            code = self.server.proc.poll() if self.server.proc else None
            self.deaths.append(f"exit {code}")
            return [f"fsup EXITED (code {code}); log tail:\n{self.server.log_tail()[-2500:]}"]
        if problems:
            return problems
        try:
            after = self.snapshot()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return [*problems, f"could not take the snapshot after the case: {exc!r}"]
        if after.formations != before.formations:
            problems.append(f"formations changed:\n  before {before.formations}\n  after  "
                            f"{after.formations}")
        if after.processes != before.processes:
            problems.append(f"formation processes changed: before {before.processes}, after "
                            f"{after.processes}")
        if after.files != before.files:
            added = sorted(set(after.files) - set(before.files))
            removed = sorted(set(before.files) - set(after.files))
            changed = sorted(k for k in set(after.files) & set(before.files)
                             if after.files[k] != before.files[k])
            problems.append(f"files under the home changed: added {added[:10]}, removed "
                            f"{removed[:10]}, changed {changed[:10]}")
        if after.outside != before.outside:
            problems.append(f"files appeared outside the home: "
                            f"{sorted(after.outside - before.outside)}")
        if after.searches != before.searches:
            problems.append(f"searches changed:\n  before {before.searches}\n  after  "
                            f"{after.searches}")
        if after.tracebacks != before.tracebacks:
            problems.append(f"fsup logged {after.tracebacks - before.tracebacks} new "
                            f"traceback(s); log tail:\n{self.server.log_tail()[-2500:]}")
        for check in self.extra_checks:
            problems += check()
        return problems

    # ---- repair between cases, so one defect does not cascade into the next case

    def restore(self) -> None:
        if not self.alive():
            self._close_clients()
            self.server.stop()  # reaps the dead process and closes its pipe
            self.server.start()
            self._connect_clients()
            wait_for(lambda: {f["id"]: f["status"] for f in
                              self.rpc.call("GET", "/rpc/formations")["formations"]}
                     .keys() >= set(self.fleet), timeout=30)
        listed = {f["id"]: f for f in self.rpc.call("GET", "/rpc/formations")["formations"]}
        for formation_id, item in listed.items():
            try:
                quoted = urllib.parse.quote(formation_id, safe="")
                if formation_id not in self.fleet:
                    self.rpc.call("DELETE", f"/rpc/formations/{quoted}")
                elif item.get("status") in ("stopped", "crashed"):
                    self.rpc.call("POST", f"/rpc/formations/{quoted}/start")
            except Exception:  # noqa: BLE001 - best effort; the next snapshot tells
                continue
        for formation_id in self.fleet:
            if formation_id not in listed:
                try:
                    self.rpc.deploy(nasty_bundle(formation_id, search={"path": "/search"}))
                except Exception:  # noqa: BLE001 - best effort
                    continue
        for search_id in self.api("GET", "/searches")["searches"]:
            if search_id["id"] != self.baseline_search:
                try:
                    self.api("DELETE", f"/searches/{search_id['id']}")
                except httpx.HTTPError:
                    continue

