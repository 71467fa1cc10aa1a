"""A throwaway PostgreSQL cluster for a test module: Debian's postgresql binaries, initdb in a
temporary directory, a free port on 127.0.0.1, stopped and removed at the end. PostgreSQL
refuses to run as root: as root (CI), the cluster belongs to the ``postgres`` system user
(``nobody`` without one) and its commands run through ``runuser``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from tests.support.inprocess import free_port


def bin_dir() -> str | None:
    """Where initdb and pg_ctl are (the newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresCluster:
    """initdb + pg_ctl start; ``url`` is an asyncpg SQLAlchemy URL to database ``visio``."""

    def __init__(self) -> None:
        bindir = bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/test.sh installs it)")
        self.bin = bindir
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="visio-pg-")
        self.data = os.path.join(self.dir, "data")
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
                break
            else:
                raise RuntimeError("running as root and no 'postgres' or 'nobody' user")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "visio", "-E", "UTF8")
        self._run(
            "pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "30",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "visio", "visio")
        self.url = f"postgresql+asyncpg://visio@127.0.0.1:{self.port}/visio"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bin, tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def stop(self) -> None:
        """Stop the server and remove its files."""
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
