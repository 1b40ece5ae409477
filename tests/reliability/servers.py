"""Private database servers for the reliability suite: stopped and restarted by its tests.

The shared servers of ``scripts/db-up`` serve every test at once and must never be touched;
the fault tests stop, restart and pause these instead. Each server lives in its own
temporary directory on a free port of 127.0.0.1 and is removed at the end of the session:

- :class:`PgCluster` -- a PostgreSQL 15 primary and a streaming hot standby
  (``pg_basebackup -R``), as ``scripts/db-up`` builds them;
- :class:`PgServer` with ``tls=True`` -- a PostgreSQL that only accepts ``hostssl``
  connections, with a CA and a server certificate made with the ``openssl`` CLI;
- :class:`MariaDB` -- a MariaDB server.

Everything here is synchronous (subprocesses), so the session-scoped fixtures need no event
loop. As root, the servers run as the ``postgres``/``mysql`` OS users, like ``scripts/db-up``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "MariaDB",
    "PgCluster",
    "PgServer",
    "ServerUnavailable",
    "free_port",
    "make_certificates",
]

USER, PASSWORD, DATABASE = "kailash", "kailash", "kailash_test"
ADMIN_PASSWORD = "kailash-admin"
WAIT = 60.0  # bounded wait for a server to come up
IS_ROOT = os.geteuid() == 0
# Fast, not durable: these clusters die with the session. The commit outcome does not
# depend on fsync (the server answers COMMIT after its WAL write either way).
# synchronous_commit stays on: off would hold WAL back from the standby for up to
# wal_writer_delay, which is not the lag the tests mean to make.
_PG_CONF = """
listen_addresses = '127.0.0.1'
max_connections = 100
wal_level = replica
max_wal_senders = 5
wal_keep_size = '64MB'
hot_standby = on
hot_standby_feedback = on
fsync = off
full_page_writes = off
shared_buffers = '16MB'
password_encryption = 'scram-sha-256'
"""


class ServerUnavailable(RuntimeError):
    """A private server cannot be made on this machine (binaries or privileges missing)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        raise ServerUnavailable("no PostgreSQL binaries under /usr/lib/postgresql")
    return bins[-1].parent


def _owned_dir(prefix: str, owner: str) -> Path:
    """Make a temporary directory the server's OS user can use (under /var/tmp as root:
    root's own /tmp subdirectories may be closed to it)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp" if IS_ROOT else None))
    base.chmod(0o755)
    if IS_ROOT:
        shutil.chown(base, owner, owner)
    return base


def _as(user: str, argv: Sequence[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if IS_ROOT else list(argv)


def _run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = WAIT) -> str:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd="/",  # postgres tools call getcwd(); the caller's cwd may be closed to them
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def _wait_port(port: int, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")
        time.sleep(0.05)


def make_certificates(base: Path, server_dir: Path, owner: str) -> None:
    """Make ``base/ca.crt`` (a CA) and ``server_dir/server.{crt,key}`` (a certificate for
    127.0.0.1 and localhost signed by it, owned by the server's OS user) with openssl."""
    if shutil.which("openssl") is None:
        raise ServerUnavailable("a TLS server needs the openssl command")
    d = server_dir
    ossl = ["openssl", "req", "-nodes", "-newkey", "rsa:2048", "-days", "2"]
    _run([*ossl, "-x509", "-subj", "/CN=kailash test CA", "-keyout", f"{base}/ca.key",
          "-out", f"{base}/ca.crt"])  # fmt: skip
    _run([*ossl, "-subj", "/CN=127.0.0.1", "-keyout", f"{d}/server.key",
          "-out", f"{base}/server.csr"])  # fmt: skip
    ext = base / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _run(["openssl", "x509", "-req", "-in", f"{base}/server.csr", "-CA", f"{base}/ca.crt",
          "-CAkey", f"{base}/ca.key", "-CAcreateserial", "-days", "2", "-extfile", str(ext),
          "-out", f"{d}/server.crt"])  # fmt: skip
    (d / "server.key").chmod(0o600)
    if IS_ROOT:
        for f in ("server.key", "server.crt"):
            shutil.chown(d / f, owner, owner)
    (base / "ca.crt").chmod(0o644)


class PgServer:
    """One private PostgreSQL server: a data directory, a port, start/stop/psql."""

    def __init__(self, datadir: Path, port: int, sockets: Path, log: Path) -> None:
        self.datadir = datadir
        self.port = port
        self.sockets = sockets
        self.log = log
        self.bin = _pg_bin()

    @property
    def dsn(self) -> str:
        """The test user's DSN (password authentication over TCP)."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        """The superuser's DSN (for pg_terminate_backend, pg_wal_replay_pause ...)."""
        return f"postgresql://postgres:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> list[str]:
        return _as("postgres", [str(self.bin / tool), *args])

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        _run(
            self._pg(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.log), "-w", "-t", str(int(WAIT)),
                "-o", f"-p {self.port} -k {self.sockets}", "start",
            )
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: a crash)."""
        _run(self._pg("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"))

    def running(self) -> bool:
        """Return whether the postmaster is running."""
        argv = self._pg("pg_ctl", "-D", str(self.datadir), "status")
        return subprocess.run(argv, capture_output=True, cwd="/", check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the unix socket; return the unaligned output."""
        argv = ["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets)]
        argv += ["-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql]
        argv[0] = str(self.bin / "psql")
        return _run(_as("postgres", argv)).strip()

    def append_conf(self, text: str, file: str = "postgresql.conf") -> None:
        """Append ``text`` to a configuration file of the data directory."""
        path = self.datadir / file
        path.write_text(path.read_text() + text)


class PgCluster:
    """A private PostgreSQL primary and its streaming hot standby, made by :meth:`create`."""

    def __init__(self, base: Path, primary: PgServer, replica: PgServer | None) -> None:
        self.base = base
        self.primary = primary
        self.replica = replica

    @classmethod
    def create(cls, *, replica: bool = True, tls: bool = False) -> PgCluster:
        """initdb a primary (and clone a standby); start both.

        ``tls=True`` makes a server that accepts only TLS connections (``hostssl``), with
        ``ca.crt`` (the CA that signed its certificate, for ``verify-ca``/``verify-full``)
        in :attr:`base`.
        """
        if IS_ROOT and shutil.which("runuser") is None:
            raise ServerUnavailable("running PostgreSQL as root needs runuser")
        base = _owned_dir("kn-pg-", "postgres")
        sockets = base / "run"
        sockets.mkdir()
        if IS_ROOT:
            shutil.chown(sockets, "postgres", "postgres")
        primary = PgServer(base / "primary", free_port(), sockets, base / "primary.log")
        cluster = cls(base, primary, None)
        try:
            cluster._init_primary(tls)
            if replica:
                cluster._clone_replica()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _init_primary(self, tls: bool) -> None:
        p = self.primary
        _run(
            p._pg(
                "initdb", "-D", str(p.datadir), "-U", "postgres", "-E", "UTF8",
                "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
            )
        )  # fmt: skip
        p.append_conf(_PG_CONF)
        if tls:
            make_certificates(self.base, p.datadir, "postgres")
            p.append_conf("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
            # Password logins over TCP only with TLS; without it the server rejects them.
            hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
            hba += "hostnossl all all 127.0.0.1/32 reject\n"
            (p.datadir / "pg_hba.conf").write_text(hba)
        p.start()
        p.psql(
            f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'; "
            f"ALTER ROLE postgres PASSWORD '{ADMIN_PASSWORD}'"
        )
        p.psql(f"CREATE DATABASE {DATABASE} OWNER {USER}")

    def _clone_replica(self) -> None:
        p = self.primary
        r = PgServer(self.base / "replica", free_port(), p.sockets, self.base / "replica.log")
        _run(
            r._pg(
                "pg_basebackup", "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
                "-D", str(r.datadir), "-R", "-X", "stream", "-c", "fast", "--no-sync",
            ),
            env={"PGPASSWORD": ADMIN_PASSWORD},
        )  # fmt: skip
        r.start()
        self.replica = r
        self.wait_streaming()

    def wait_streaming(self, timeout: float = WAIT) -> None:
        """Wait until the standby streams from the primary again."""
        assert self.replica is not None
        deadline = time.monotonic() + timeout
        sql = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"
        while True:
            with contextlib.suppress(RuntimeError):
                if self.replica.psql(sql) == "1":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private standby is not streaming after {timeout:g}s")
            time.sleep(0.1)

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed a TLS server's certificate."""
        return self.base / "ca.crt"

    def destroy(self) -> None:
        """Stop every server (immediately) and remove the directory."""
        for server in (self.replica, self.primary):
            if server is not None and server.running():
                with contextlib.suppress(Exception):
                    server.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def _mariadbd() -> str | None:
    return next((b for b in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld") if Path(b).exists()), None)


class MariaDB:
    """A private MariaDB server: ``create``, ``stop``, ``start``, ``destroy``."""

    def __init__(self, base: Path, port: int, tls: bool = False) -> None:
        self.base = base
        self.port = port
        self.tls = tls
        self.datadir = base / "data"
        self.socket = base / "mariadb.sock"
        self.pidfile = base / "mariadb.pid"
        self.log = base / "mariadb.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The test user's DSN."""
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed a TLS server's certificate."""
        return self.base / "ca.crt"

    @classmethod
    def create(cls, *, tls: bool = False) -> MariaDB:
        """Install a data directory, start the server, create the test user and database.

        ``tls=True``: the server has a certificate signed by :attr:`ca_file` and refuses
        connections without TLS (``require_secure_transport``).
        """
        if _mariadbd() is None or shutil.which("mariadb-install-db") is None:
            raise ServerUnavailable("no MariaDB server binaries")
        server = cls(_owned_dir("kn-my-", "mysql"), free_port(), tls)
        try:
            if tls:
                make_certificates(server.base, server.base, "mysql")
            user = ["--user=mysql"] if IS_ROOT else []
            _run(["mariadb-install-db", "--no-defaults", *user, f"--datadir={server.datadir}",
                  "--skip-test-db", "--auth-root-authentication-method=normal"])  # fmt: skip
            server.start()
            server.sql(
                f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4; "
                f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; "
                f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'%'; "
                "GRANT PROCESS, CONNECTION ADMIN ON *.* TO 'kailash'@'%';"
            )
        except BaseException:
            server.destroy()
            raise
        return server

    def start(self) -> None:
        """Start mariadbd and wait until it accepts connections on its port."""
        mariadbd = _mariadbd()
        if mariadbd is None:
            raise ServerUnavailable("no MariaDB server binaries")
        user = ["--user=mysql"] if IS_ROOT else []
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [mariadbd, "--no-defaults", *user, f"--datadir={self.datadir}",
                 f"--socket={self.socket}", f"--pid-file={self.pidfile}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", "--skip-name-resolve", "--max-connections=100",
                 "--character-set-server=utf8mb4", "--innodb-buffer-pool-size=16M",
                 "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin",
                 f"--log-error={self.log}", *self._tls_args()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + WAIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.proc.returncode}); log: {self.log}")
            with contextlib.suppress(RuntimeError):
                self.sql("SELECT 1")
                _wait_port(self.port, 1.0)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd not ready after {WAIT:g}s; log: {self.log}")
            time.sleep(0.1)

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        b = self.base
        return [f"--ssl-ca={b}/ca.crt", f"--ssl-cert={b}/server.crt", f"--ssl-key={b}/server.key",
                "--require-secure-transport=ON"]  # fmt: skip

    def sql(self, sql: str) -> str:
        """Run ``sql`` as root over the unix socket; return the output."""
        argv = ["mariadb", "--no-defaults", "--protocol=socket", f"--socket={self.socket}"]
        return _run([*argv, "-uroot", "-N", "-e", sql], timeout=10).strip()

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
