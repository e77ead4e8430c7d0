"""Who listens on a formation's port: its own process tree, or a stranger.

A health probe only learns that *something* answered on 127.0.0.1:<port>. If a process that
fsup did not start holds the port, the probe (and the proxy) would talk to it. So a port counts
as the formation's only while every listening socket that reaches 127.0.0.1:<port> (bound to
127.0.0.1, 0.0.0.0, :: or ::ffff:127.0.0.1) belongs to the formation's main process or one of
its descendants.

How: the listening sockets of the port come from the kernel's socket diagnostics (netlink
sock_diag asked for listeners only; /proc/net/tcp* where that is missing), and are matched by
inode against the open file descriptors of the tree: the main pid first, its descendants only
when it does not hold them all. Only when a stranger is found are all processes scanned, to
name it. `psutil.Process.net_connections()` (and the machine-wide `psutil.net_connections()`)
read /proc/net/tcp*, which walks the kernel's whole established-socket hash: about 8 ms per call
on the host where this was measured, against about 0.1 ms for this check.

Callers still run the check only at moments that matter (before a spawn, when a probe first
succeeds or succeeds again after a failure), never on every probe of a healthy formation.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import psutil
import trio

from supervisor.core.errors import FsupError

from .base import ActorRef
from .port_requests import AllocatePort, ReleasePort

# Netlink socket diagnostics (linux/sock_diag.h, linux/inet_diag.h).
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_DUMP_REQUEST = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCPF_LISTEN = 1 << 10
# The fallback: the kernel's text tables.
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_LISTEN = "0A"
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
# A process killed a moment ago (our previous process, a stray) can hold its socket a few ms
# longer; a stranger holds it for good. Wait this long before calling the port taken.
FREE_GRACE_S = 1.0
FREE_POLL_S = 0.1
# Staging ports tried before an update gives up with PORT_IN_USE.
STAGING_TRIES = 3


@dataclass(frozen=True)
class Holder:
    """A process outside the formation that listens on its port (pid None: fsup may not see
    it, e.g. it belongs to another user)."""

    pid: int | None
    name: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "a process fsup cannot see (another user's?)"
        return f"pid {self.pid} ({self.name or '?'})"


@dataclass(frozen=True)
class PortOwners:
    """Who listens on a port: the tree (`ours`) and anyone else (`foreign`)."""

    ours: bool
    foreign: tuple[Holder, ...] = ()


class ListenerCheck(Protocol):
    """Answers who listens on a port (a fake one in unit tests)."""

    async def owners(self, port: int, roots: Collection[int]) -> PortOwners: ...


class ProcListeners:
    """The real check, in a worker thread (it reads /proc and, to name a stranger, scans
    every process)."""

    async def owners(self, port: int, roots: Collection[int]) -> PortOwners:
        return await trio.to_thread.run_sync(port_owners, port, tuple(roots))


def port_owners(port: int, roots: Collection[int]) -> PortOwners:
    """Who listens on 127.0.0.1:`port`, relative to the process trees rooted at `roots`."""
    listening = listening_inodes(port)
    if not listening:
        return PortOwners(ours=False)
    strangers, tree = _unclaimed(listening, roots)
    foreign = _holders(strangers, tree) if strangers else ()
    return PortOwners(ours=len(strangers) < len(listening), foreign=foreign)


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port` that a connection to 127.0.0.1 reaches,
    from the kernel's socket diagnostics (netlink), or its /proc tables where that is missing."""
    try:
        found = [
            row for family in (socket.AF_INET, socket.AF_INET6) for row in diag_listeners(family)
        ]
    except OSError:
        found = [row for table in TABLES for row in _table_listeners(table)]
    return {inode for address, sport, inode in found if sport == port and _reaches(address)}


def diag_listeners(family: int) -> list[tuple[bytes, int, int]]:
    """(address, port, inode) of every listening TCP socket of `family` (sock_diag asked for
    listeners only walks the kernel's small listening hash: tens of microseconds, where
    reading /proc/net/tcp walks the whole established hash, milliseconds on a large host).
    Public: a test replaces it to prove the /proc fallback gives the same answer."""
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, TCPF_LISTEN) + bytes(48)
    header = struct.pack("=LHHLL", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_DUMP_REQUEST, 1, 0)
    size = 4 if family == socket.AF_INET else 16
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as link:
        link.sendto(header + request, (0, 0))
        rows: list[tuple[bytes, int, int]] = []
        while True:
            data = link.recv(65536)
            for kind, body in _messages(data):
                if kind == NLMSG_DONE:
                    return rows
                if kind == NLMSG_ERROR:
                    raise OSError(-struct.unpack_from("=i", body)[0], "sock_diag refused")
                (sport,) = struct.unpack_from("!H", body, 4)
                (inode,) = struct.unpack_from("=I", body, 68)
                rows.append((body[8 : 8 + size], sport, inode))


def _messages(data: bytes) -> Iterable[tuple[int, bytes]]:
    """The (type, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=LH", data, offset)
        yield kind, data[offset + 16 : offset + length]
        offset += (length + 3) & ~3


def _table_listeners(path: str) -> Iterable[tuple[bytes, int, int]]:
    """(address, port, inode) of the listening sockets in a /proc/net/tcp* table."""
    try:
        with open(path) as table:
            next(table, None)  # the header
            rows = [line.split() for line in table]
    except FileNotFoundError:  # no IPv6 on this host
        return []
    return [_table_row(fields[1], fields[9]) for fields in rows if fields[3] == TCP_LISTEN]


def _table_row(local: str, inode: str) -> tuple[bytes, int, int]:
    """The kernel prints each 32-bit word of the address in host order, then the port."""
    address, _, port = local.partition(":")
    raw = bytes.fromhex(address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw, int(port, 16), int(inode)


def _reaches(raw: bytes) -> bool:
    """Whether a socket bound to this address takes connections to 127.0.0.1: bound to it,
    to any address (v4 or v6), or to its v4-mapped form."""
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_unspecified or address == LOOPBACK


def _unclaimed(listening: set[int], roots: Collection[int]) -> tuple[set[int], set[int]]:
    """The listening inodes no process of the trees holds, and the pids looked at. The roots
    come first: the main process usually holds the socket, and then no descendant (nor the
    machine-wide process list that finding descendants needs) is read at all."""
    left, tree = set(listening), set(roots)
    for pid in roots:
        left -= socket_inodes(pid)
    if left:
        for pid in _descendants(roots):
            tree.add(pid)
            left -= socket_inodes(pid)
            if not left:
                break
    return left, tree


def _descendants(roots: Iterable[int]) -> list[int]:
    found: list[int] = []
    for root in roots:
        try:
            found.extend(int(child.pid) for child in psutil.Process(root).children(recursive=True))
        except psutil.Error:
            continue
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets among `pid`'s open file descriptors (empty if it is gone or not
    ours to read)."""
    inodes: set[int] = set()
    try:
        with os.scandir(f"/proc/{pid}/fd") as entries:
            for entry in entries:
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _holders(strangers: set[int], tree: set[int]) -> tuple[Holder, ...]:
    """Name the processes holding `strangers` (a scan of every process: the failure path)."""
    found: list[Holder] = []
    for proc in psutil.process_iter(["name"]):
        pid = int(proc.pid)
        if pid not in tree and socket_inodes(pid) & strangers:
            found.append(Holder(pid, _name(proc)))
    return tuple(found) or (Holder(None, None),)


def _name(proc: Any) -> str | None:
    name = proc.info.get("name")
    return str(name) if name else None


# -- what the formation actor calls -----------------------------------------------------------


def port_in_use(
    formation_id: str,
    port: int,
    holders: tuple[Holder, ...],
    stage: str,
    serving: str | None = None,
) -> FsupError:
    """The PORT_IN_USE error: which port, who holds it, and what the operator can do."""
    who = ", ".join(holder.describe() for holder in holders) or "another process"
    if serving is None:
        todo = f"stop that process or free port {port}, then start '{formation_id}' again"
    else:
        todo = f"{serving} keeps serving; stop that process or free port {port} and retry"
    first = holders[0] if holders else Holder(None, None)
    return FsupError(
        "PORT_IN_USE",
        f"port {port} of formation '{formation_id}' is held by {who}, which is not part of "
        f"the formation; {todo}",
        {
            "formation_id": formation_id,
            "port": port,
            "stage": stage,
            "pid": first.pid,
            "process_name": first.name,
            "holders": [{"pid": h.pid, "name": h.name} for h in holders],
        },
    )


async def holders_after_grace(listeners: ListenerCheck, port: int) -> tuple[Holder, ...]:
    """Who still listens on `port` (nobody: it is free), allowing a just-killed process the
    moment it needs to let go of its socket."""
    deadline = trio.current_time() + FREE_GRACE_S
    while True:
        holders = (await listeners.owners(port, ())).foreign
        if not holders or trio.current_time() >= deadline:
            return holders
        await trio.sleep(FREE_POLL_S)


async def ensure_port_free(listeners: ListenerCheck, formation_id: str, port: int) -> None:
    """Raise PORT_IN_USE if a process listens on the port a formation is about to start on."""
    holders = await holders_after_grace(listeners, port)
    if holders:
        raise port_in_use(formation_id, port, holders, "spawning")


async def staging_port(
    fleet: ActorRef, listeners: ListenerCheck, formation_id: str, serving: str
) -> int:
    """A port for an update's staging process that nobody listens on. The fleet's pool checks
    a port when it hands it out, but a stranger may take it right after: such a port goes
    back and another is asked for, a few times, before PORT_IN_USE. Shielded and bounded: a
    port the fleet handed out must reach the caller or go back, never leak."""
    with trio.CancelScope(shield=True), trio.fail_after(10):
        for _ in range(STAGING_TRIES):
            port: int = await fleet.ask(AllocatePort(formation_id))
            holders = (await listeners.owners(port, ())).foreign
            if not holders:
                return port
            await fleet.ask(ReleasePort(formation_id, port))
    raise port_in_use(formation_id, port, holders, "spawning_staging", serving)
