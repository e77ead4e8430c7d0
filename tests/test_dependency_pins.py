"""Dependencies pinned where fsup reaches inside them (issue 17).

`supervisor/http/serving.py` subclasses Hypercorn's trio `TCPServer` and replaces private
methods; it also drives Hypercorn's lifespan and worker context itself.
`supervisor/http/h2_guard.py` subclasses its HTTP/2 protocol and its protocol switch. A release that renames
or reshapes any of them would not fail loudly: the override would simply stop being called
and the races it mends would come back. So Hypercorn is pinned to one minor release, and this
file checks every member `serving.py` and `h2_guard.py` reach (docs/upstream/README.md lists them, with why)
against the installed release: names, signatures, and the calls that make an override run.
It also checks that every third-party package fsup imports is declared (h11 was not).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import trio
from hypercorn.config import Config, Sockets
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import repr_socket_addr, wrap_app
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def declared() -> dict[str, Requirement]:
    """The project's run-time requirements that apply to this Python, by canonical name."""
    found = {}
    for line in PYPROJECT["project"]["dependencies"]:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            found[canonicalize_name(req.name)] = req
    return found


def test_hypercorn_is_pinned_to_one_minor_release_and_that_one_is_installed() -> None:
    spec = declared()["hypercorn"].specifier
    installed = Version(importlib.metadata.version("hypercorn"))
    assert installed in spec, f"Hypercorn {installed} is outside the pin {spec}"
    major, minor = installed.major, installed.minor
    assert Version(f"{major}.{minor}.99") in spec, "a patch release of the minor is allowed"
    assert Version(f"{major}.{minor + 1}.0") not in spec, "the next minor must not be allowed"
    assert Version(f"{major}.{minor}.0") in spec and Version(f"{major}.{minor - 1}.99") not in spec


# Each member serving.py overrides or calls: its parameters (self first) and whether it is a
# coroutine function.
TCP_SERVER_MEMBERS = {
    "__init__": (["self", "app", "config", "context", "state", "stream"], False),
    "run": (["self"], True),
    "protocol_send": (["self", "event"], True),  # overridden, calls super()
    "_read_data": (["self"], True),  # overridden, calls super()
    "_close": (["self"], True),  # replaced whole
}


def test_the_tcp_server_members_serving_overrides_exist_with_their_signatures() -> None:
    for name, (params, is_coroutine) in TCP_SERVER_MEMBERS.items():
        member = inspect.getattr_static(TCPServer, name)
        assert list(inspect.signature(member).parameters) == params, name
        assert inspect.iscoroutinefunction(member) is is_coroutine, name


def _calls(function: object) -> set[str]:
    """`self.<name>(...)` calls in `function`'s source."""
    tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(function)))  # type: ignore[arg-type]
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    }


def test_the_overridden_methods_are_still_the_ones_hypercorn_calls() -> None:
    """An override only mends something if Hypercorn still calls it from where serving.py
    expects: `run` reads through `_read_data` and closes through `_close`, and
    `protocol_send` closes through `_close` on `Closed`."""
    assert {"_read_data", "_close"} <= _calls(TCPServer.run)
    assert "_close" in _calls(TCPServer.protocol_send)
    assert "protocol_send" in inspect.getsource(TCPServer.run)  # handed to the protocol


def test_the_tcp_server_attributes_serving_uses_are_set() -> None:
    stream = object()
    server = TCPServer(None, Config(), WorkerContext(None), {}, stream)  # type: ignore[arg-type]
    assert isinstance(server.send_lock, trio.Lock)
    assert server.stream is stream
    assert inspect.iscoroutinefunction(server.idle_task.stop)
    # `protocol` is set when the connection runs; serving.py calls its `handle(Closed())`.
    assigned = {
        target.attr
        for node in ast.walk(ast.parse(inspect.cleandoc("\n" + inspect.getsource(TCPServer.run))))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
    }
    assert "protocol" in assigned
    assert inspect.iscoroutinefunction(ProtocolWrapper.handle)


def test_run_builds_the_protocol_switch_before_it_reads() -> None:
    """`ContainedTCPServer._read_data` replaces `self.protocol` with the guarded switch
    (h2_guard.py), which is only safe before anything is read: `run` must assign it first."""
    source = inspect.getsource(TCPServer.run)
    assert source.index("self.protocol = ProtocolWrapper(") < source.index("self._read_data()")
    assert "alpn_protocol" in source  # HTTP/2 from the start only with TLS (ALPN)


# `ProtocolWrapper`'s parameters, read back as attributes by `GuardedProtocolWrapper.replacing`
# and by its switch to `GuardedH2Protocol` (`state` is the wrapper's name for the connection
# state it hands on).
WRAPPER_FIELDS = ["app", "config", "context", "task_group", "state", "ssl", "client", "server"]


def test_the_protocol_switch_h2_guard_replaces() -> None:
    params = list(inspect.signature(ProtocolWrapper).parameters)
    assert params == [*WRAPPER_FIELDS, "send", "alpn_protocol"]
    init = inspect.getsource(ProtocolWrapper.__init__)
    for name in [*WRAPPER_FIELDS, "send", "protocol"]:
        assert f"self.{name} = " in init, name
    # `handle` is replaced whole: upstream switches to HTTP/2 on exactly these two errors, with
    # these attributes; a third way in would bypass the guard.
    handle = inspect.getsource(ProtocolWrapper.handle)
    assert handle.count("except ") == 2
    assert "except H2ProtocolAssumedError" in handle and "except H2CProtocolRequiredError" in handle
    assert list(inspect.signature(H2ProtocolAssumedError).parameters) == ["data"]
    assert list(inspect.signature(H2CProtocolRequiredError).parameters) == ["data", "request"]
    for name in ("data", "headers", "settings"):
        assert f"self.{name} = " in inspect.getsource(H2CProtocolRequiredError.__init__), name


def test_the_h2_protocol_members_h2_guard_overrides_and_reads() -> None:
    """`GuardedH2Protocol` overrides `_handle_events` (calling it one event at a time) and
    reads `streams`, `stream_buffers` and `connection`; the protocol must still feed every
    received event through `_handle_events`, and still key both maps by stream id."""
    params = inspect.signature(H2Protocol).parameters
    assert list(params) == [*WRAPPER_FIELDS[:4], "connection_state", *WRAPPER_FIELDS[5:], "send"]
    handle_events = inspect.getattr_static(H2Protocol, "_handle_events")
    assert list(inspect.signature(handle_events).parameters) == ["self", "events"]
    assert inspect.iscoroutinefunction(handle_events)
    assert inspect.iscoroutinefunction(H2Protocol._flush)
    assert list(inspect.signature(H2Protocol.initiate).parameters) == [
        "self",
        "headers",
        "settings",
    ]
    assert "_handle_events" in _calls(H2Protocol.handle)
    init = inspect.getsource(H2Protocol.__init__)
    for name in ("streams", "stream_buffers", "connection"):
        assert f"self.{name}" in init, name
    create = inspect.getsource(H2Protocol._create_stream)
    assert "self.streams[request.stream_id] = " in create
    assert "self.stream_buffers[request.stream_id] = " in create


def test_the_lifespan_worker_context_and_utilities_serving_drives() -> None:
    assert list(inspect.signature(Lifespan).parameters) == ["app", "config", "state"]
    for name in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, name)), name
    assert "task_status" in inspect.signature(Lifespan.handle_lifespan).parameters
    assert inspect.iscoroutinefunction(WorkerContext(None).terminated.set)
    assert list(inspect.signature(wrap_app).parameters) == ["app", "wsgi_max_body_size", "mode"]
    assert list(inspect.signature(repr_socket_addr).parameters) == ["family", "address"]
    assert "insecure_sockets" in {field.name for field in dataclasses.fields(Sockets)}
    config = Config()
    for name in ("backlog", "wsgi_max_body_size", "graceful_timeout", "create_sockets"):
        assert hasattr(config, name), name


def _imported_packages() -> dict[str, str]:
    """Top-level third-party names imported by fsup's own code, with one module each."""
    found: dict[str, str] = {}
    for root in ("supervisor", "actors"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("supervisor", "actors"):
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_package_fsup_imports_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    names = declared()
    imported = _imported_packages()
    assert "h11" in imported  # the proxy's client: this test would miss it otherwise
    for top, module in imported.items():
        owners = {canonicalize_name(d) for d in distributions.get(top, [top])}
        assert owners & set(names), f"{module} imports {top}, which pyproject.toml does not declare"


def test_httpx_imports_without_its_command_line_module() -> None:
    """`fsup serve` marks `httpx._main` absent (supervisor/cli/serve.py); httpx must fall back
    to its stub rather than fail to import."""
    code = (
        "import sys\n"
        "sys.modules['httpx._main'] = None\n"
        "import httpx\n"
        "assert httpx.main.__module__ == 'httpx', httpx.main.__module__\n"
        "assert 'rich' not in sys.modules and 'click' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# Packages whose newer APIs fsup uses: the release that brought the newest one, which the
# declared floor must not go below, and a check that the installed release has it.
NEWER_APIS = {
    # `CancelScope.cancel(reason=...)`: server.py, http/proxy.py (trio 0.31.0).
    "trio": (
        "0.31.0",
        lambda: "reason" in inspect.signature(trio.CancelScope.cancel).parameters,
    ),
}


def test_each_declared_floor_is_the_release_that_brought_the_apis_fsup_uses() -> None:
    """`pip install fsup` beside an older release than the floor would install cleanly and
    then fail at run time: the floor is the release that brought the API, no lower."""
    for name, (since, _) in NEWER_APIS.items():
        spec = declared()[name].specifier
        first = Version(since)
        assert first in spec, f"{name} {first} is refused by {spec}"
        before = Version(f"{first.major}.{first.minor - 1}.99")
        assert before not in spec, f"{name} {spec} allows {before}, which lacks the API"


def test_the_installed_releases_meet_what_is_declared() -> None:
    for name, requirement in declared().items():
        installed = Version(importlib.metadata.version(name))
        assert installed in requirement.specifier, f"{name} {installed} vs {requirement}"
    for name, (_, has_api) in NEWER_APIS.items():
        assert has_api(), f"the installed {name} lacks the API fsup uses"
