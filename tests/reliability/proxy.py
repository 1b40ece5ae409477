"""An asyncio TCP proxy that cuts, stalls and refuses connections on command (fault tests).

Put it between a pool and a server (``proxy.dsn(server_dsn)``), then inject a fault:

- :meth:`FaultProxy.cut_all` -- drop every open connection now (RST to the client, FIN to
  the server, so the server sees the client leave and rolls back what it had open);
- :meth:`FaultProxy.cut_when` -- drop a connection when a chunk matching a predicate passes
  in one direction, before forwarding it (the other side never sees it) or just after;
  :meth:`cut_on_statement` (the client sends a statement matching a pattern: PostgreSQL's
  simple or extended protocol, MySQL's COM_QUERY), :meth:`cut_on_reply` (the server
  answers with a PostgreSQL command tag, e.g. ``COMMIT``) and :meth:`cut_on_answer_to`
  (the server answers a statement matching a pattern, on either protocol) build on it;
- :meth:`FaultProxy.cut_after_bytes` -- drop new connections after N bytes in one
  direction (during connect, authentication or the TLS handshake);
- :meth:`FaultProxy.stall` -- stop forwarding in both directions without closing anything
  (a black hole: new connections are accepted and hang too); :meth:`stall_on_answer_to`
  does it when the server answers a given statement (the answer is held);
- :meth:`FaultProxy.refuse` -- stop listening (new connects get ECONNREFUSED);
- :meth:`FaultProxy.restore` -- undo every fault (already cut connections stay cut).

The proxy understands enough of the PostgreSQL and MySQL wire protocols to say which SQL
a client chunk executes (a named prepared statement's text is remembered from its Parse)
and which command tags a server chunk carries; a TLS connection is opaque after the
handshake starts, which is all the TLS faults need.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Chunk", "FaultProxy", "Rule"]

C2S, S2C = "c2s", "s2c"
_SSL_REQUEST, _GSS_REQUEST = 80877103, 80877104
_READ = 65536


@dataclass(slots=True)
class Chunk:
    """What one read carried in one direction, as the matchers see it."""

    direction: str
    data: bytes
    statements: list[str] = field(default_factory=list)  # SQL executed by this client chunk
    tags: list[str] = field(default_factory=list)  # PostgreSQL command tags in a server chunk
    before: int = 0  # bytes this link carried in this direction before the chunk
    answering: str = ""  # server chunk: the last statement the client executed on the link


@dataclass(slots=True)
class Rule:
    """Cut a link when ``match`` accepts a chunk; ``forward`` passes the chunk on first."""

    direction: str
    match: Callable[[Chunk], bool]
    forward: bool = False
    once: bool = True
    new_links_only: bool = False
    limit: int | None = None  # for cut_after_bytes: forward up to this many bytes, then cut
    stall: bool = False  # stall the proxy (hold this chunk) instead of cutting the link
    born: int = 0  # links opened before this number are not affected (new_links_only)
    fired: int = 0


class _PgParser:
    """Follows one PostgreSQL connection: statements executed, command tags answered."""

    def __init__(self) -> None:
        self.buf = {C2S: b"", S2C: b""}
        self.startup = True  # the client's next message has no type byte
        self.ssl_pending = False  # an SSLRequest waits for its one-byte answer
        self.opaque = False  # TLS: nothing more to read
        self.named: dict[bytes, str] = {}  # prepared statement name -> SQL (Parse)
        self.bound = ""  # SQL of the unnamed portal (Bind)

    def feed(self, chunk: Chunk) -> None:
        if self.opaque:
            return
        if chunk.direction == S2C and self.ssl_pending and chunk.data:
            self.ssl_pending = False
            if chunk.data[:1] == b"S":
                self.opaque = True
                return
            data = chunk.data[1:]  # 'N': the client sends its startup message in clear
        else:
            data = chunk.data
        buf = self.buf[chunk.direction] + data
        while True:
            if chunk.direction == C2S and self.startup:
                if len(buf) < 8:
                    break
                (length,) = struct.unpack("!I", buf[:4])
                if len(buf) < length:
                    break
                (code,) = struct.unpack("!I", buf[4:8])
                if code in (_SSL_REQUEST, _GSS_REQUEST):
                    self.ssl_pending = True
                else:
                    self.startup = False
                buf = buf[length:]
                continue
            if len(buf) < 5:
                break
            kind, (length,) = buf[:1], struct.unpack("!I", buf[1:5])
            if len(buf) < 1 + length:
                break
            self._message(chunk, kind, buf[5 : 1 + length])
            buf = buf[1 + length :]
        self.buf[chunk.direction] = buf

    def _message(self, chunk: Chunk, kind: bytes, body: bytes) -> None:
        if chunk.direction == S2C:
            if kind == b"C":
                chunk.tags.append(body.rstrip(b"\0").decode(errors="replace"))
            return
        if kind == b"Q":
            chunk.statements.append(body.rstrip(b"\0").decode(errors="replace"))
        elif kind == b"P":
            name, _, rest = body.partition(b"\0")
            self.named[name] = rest.partition(b"\0")[0].decode(errors="replace")
        elif kind == b"B":
            _portal, _, rest = body.partition(b"\0")
            self.bound = self.named.get(rest.partition(b"\0")[0], "")
        elif kind == b"E":
            chunk.statements.append(self.bound)


class _MySQLParser:
    """Follows one MySQL connection: the text of every COM_QUERY the client sends."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, chunk: Chunk) -> None:
        if chunk.direction != C2S:
            return
        buf = self.buf + chunk.data
        while len(buf) >= 4:
            length = int.from_bytes(buf[:3], "little")
            if len(buf) < 4 + length:
                break
            seq, payload = buf[3], buf[4 : 4 + length]
            if seq == 0 and payload[:1] == b"\x03":  # a command packet: COM_QUERY
                chunk.statements.append(payload[1:].decode(errors="replace"))
            buf = buf[4 + length :]
        self.buf = buf


class _Link:
    """One proxied connection: two pumps, byte counters and the protocol parser."""

    def __init__(
        self, number: int, client: asyncio.StreamWriter, server: asyncio.StreamWriter, proto: str
    ) -> None:
        self.number = number
        self.writers = {C2S: server, S2C: client}  # where each direction's data goes
        self.sent = {C2S: 0, S2C: 0}
        self.parser: _PgParser | _MySQLParser | None = (
            _PgParser() if proto == "postgresql" else _MySQLParser() if proto == "mysql" else None
        )
        self.closed = False
        self.last_statement = ""  # what a server chunk is (most likely) the answer to

    def cut(self) -> None:
        """Drop both sides now: RST to the client, FIN to the server."""
        if self.closed:
            return
        self.closed = True
        client, server = self.writers[S2C], self.writers[C2S]
        sock = client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.transport.abort()
        server.transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port).

    ``protocol`` ("postgresql", "mysql" or None) lets rules see the statements and command
    tags. Start with :meth:`start`, stop with :meth:`close`. Counters: ``links_opened``,
    ``cuts`` (links dropped by a fault).
    """

    def __init__(self, host: str, port: int, protocol: str | None = None) -> None:
        self.upstream = (host, port)
        self.protocol = protocol
        self.port = 0
        self.links: set[_Link] = set()
        self.links_opened = 0
        self.cuts = 0
        self.rules: list[Rule] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on a free port (or the same port again after :meth:`refuse`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every link."""
        await self._stop_listening()
        self.cut_all(count=False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def dsn(self, dsn: str) -> str:
        """Return ``dsn`` with its host:port replaced by the proxy's."""
        host, port = self.upstream
        return re.sub(rf"@{re.escape(host)}:{port}\b", f"@127.0.0.1:{self.port}", dsn, count=1)

    # ------------------------------------------------------------------ faults

    def cut_all(self, *, count: bool = True) -> int:
        """Drop every open link now; return how many."""
        links = [link for link in self.links if not link.closed]
        for link in links:
            link.cut()
        if count:
            self.cuts += len(links)
        return len(links)

    def cut_when(
        self,
        direction: str,
        match: Callable[[Chunk], bool],
        *,
        forward: bool = False,
        once: bool = True,
        new_links_only: bool = False,
    ) -> Rule:
        """Drop the link that carries a chunk ``match`` accepts in ``direction``."""
        rule = Rule(direction, match, forward, once, new_links_only, born=self.links_opened)
        self.rules.append(rule)
        return rule

    def cut_on_statement(self, pattern: str, *, forward: bool = False, once: bool = True) -> Rule:
        """Drop the link when the client executes SQL matching ``pattern`` (a regex,
        case-insensitive): before the server sees it, or (``forward``) just after."""
        regex = re.compile(pattern, re.I)
        return self.cut_when(
            C2S, lambda c: any(regex.search(s) for s in c.statements), forward=forward, once=once
        )

    def cut_on_reply(self, tag: str, *, once: bool = True) -> Rule:
        """Drop the link when the server answers with command tag ``tag`` (PostgreSQL),
        without forwarding the answer: the server did it, the client never hears so."""
        return self.cut_when(S2C, lambda c: any(t.startswith(tag) for t in c.tags), once=once)

    def cut_on_answer_to(self, pattern: str, *, once: bool = True) -> Rule:
        """Drop the link when the server's answer to a statement matching ``pattern`` (a
        regex, case-insensitive) arrives, without forwarding it (PostgreSQL and MySQL):
        the server did it, the client never hears so."""
        regex = re.compile(pattern, re.I)
        return self.cut_when(S2C, lambda c: bool(regex.search(c.answering)), once=once)

    def stall_on_answer_to(self, pattern: str) -> Rule:
        """Stall the proxy when the server answers a statement matching ``pattern`` (a
        regex, case-insensitive), holding the answer (and everything else) until
        :meth:`restore`: the server did it, the client waits."""
        rule = self.cut_on_answer_to(pattern)
        rule.stall = True
        return rule

    def cut_after_bytes(self, limit: int, direction: str = S2C, *, once: bool = False) -> Rule:
        """Drop each link opened from now on after ``limit`` bytes in ``direction``."""
        rule = self.cut_when(direction, lambda c: True, once=once, new_links_only=True)
        rule.limit = limit
        return rule

    def stall(self) -> None:
        """Stop forwarding anything; links stay open (no reset), new ones hang too."""
        self._flowing.clear()

    async def refuse(self) -> None:
        """Stop listening: new connects are refused; open links are left alone."""
        await self._stop_listening()

    async def restore(self) -> None:
        """Clear every rule, resume forwarding, listen again."""
        self.rules.clear()
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # ------------------------------------------------------------------ forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(self.links_opened, writer, up_writer, self.protocol or "")
        self.links_opened += 1
        self.links.add(link)
        pumps = [
            asyncio.create_task(self._pump(link, reader, C2S)),
            asyncio.create_task(self._pump(link, up_reader, S2C)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.closed = True
            for task in pumps:
                task.cancel()
            writer.transport.abort()
            up_writer.transport.abort()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            self.links.discard(link)

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, direction: str) -> None:
        out = link.writers[direction]
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not link.closed:
                data = await reader.read(_READ)
                if not data:
                    if out.can_write_eof():
                        out.write_eof()
                    return
                await self._flowing.wait()
                if link.closed:
                    return
                chunk = Chunk(direction, data, before=link.sent[direction])
                chunk.answering = link.last_statement if direction == S2C else ""
                if link.parser is not None:
                    link.parser.feed(chunk)
                if chunk.statements:
                    link.last_statement = chunk.statements[-1]
                rule = self._matching_rule(link, chunk)
                if rule is not None and rule.stall:
                    self.stall()
                    await self._flowing.wait()
                    if link.closed:
                        return
                elif rule is not None:
                    keep = rule.limit - chunk.before if rule.limit is not None else 0
                    if rule.forward or keep > 0:
                        out.write(data if rule.forward else data[: max(keep, 0)])
                        with contextlib.suppress(OSError):
                            await out.drain()
                    self.cuts += 1
                    link.cut()
                    return
                out.write(data)
                link.sent[direction] += len(data)
                await out.drain()

    def _matching_rule(self, link: _Link, chunk: Chunk) -> Rule | None:
        for rule in self.rules:
            if rule.direction != chunk.direction or (rule.once and rule.fired):
                continue
            if rule.new_links_only and link.number < rule.born:
                continue
            if rule.limit is not None and chunk.before + len(chunk.data) <= rule.limit:
                continue
            if rule.match(chunk):
                rule.fired += 1
                return rule
        return None
