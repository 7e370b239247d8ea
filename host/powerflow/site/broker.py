"""A Mosquitto broker for a site, with authentication and ACLs (protocol/SITE.md §Security).

`acl_text` is the access list every deployment should use: a rack (its MQTT user name is its
client id) may publish only its own birth, death, report and ack, and read only its own
commands and the site's active-controller state; only the site controllers' users may
publish budgets and the active state. `Mosquitto` runs Debian's `mosquitto` on a free port of
127.0.0.1 with such files, for `make demo-site`, `site scenario run` and the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from powerflow.site.messages import PREFIX


class BrokerError(RuntimeError):
    pass


def acl_text(site: str, controllers: list[str]) -> str:
    """Mosquitto's acl_file for `site`: controllers read and write the site's tree; every
    other user (a rack) only its own topics (`%u` is the user name, which is its client id)."""
    base = f"{PREFIX}/{site}"
    lines = ["# PowerFlow site ACL: generated; see protocol/SITE.md", ""]
    for c in controllers:
        lines += [f"user {c}", f"topic readwrite {base}/#", ""]
    lines += ["# every rack: its own topics only",
              f"pattern write {base}/rack/%u/birth",
              f"pattern write {base}/rack/%u/death",
              f"pattern write {base}/rack/%u/report",
              f"pattern write {base}/rack/%u/ack",
              f"pattern read {base}/rack/%u/cmd/#",
              f"pattern read {base}/active", ""]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mosquitto:
    """A broker process; `users` maps user name -> password (generated when empty)."""

    workdir: Path
    site: str
    controllers: list[str]
    racks: list[str]
    port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    # more addresses to listen on beside 127.0.0.1 (same port), e.g. the host end of a test
    # network namespace's link; never a wildcard
    also_listen: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
            raise BrokerError("mosquitto is not installed: `apt-get install mosquitto` "
                              "(make demo-site and make test install it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # what mosquitto itself reads; started as root it drops to its own user, which
        # cannot pass a caller's private folders: then a folder of its own under /tmp
        self.confdir = self.workdir
        if os.geteuid() == 0:
            self.confdir = Path(tempfile.mkdtemp(prefix="pf-mosquitto-"))
        for u in self.controllers + self.racks:
            self.passwords.setdefault(u, secrets.token_urlsafe(18))
        pw = self.confdir / "passwd"
        pw.write_text("")
        pw.chmod(0o600)
        for u, p in self.passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pw), u, p], check=True,
                           capture_output=True)
        (self.confdir / "acl").write_text(acl_text(self.site, self.controllers))
        self._hand_over()
        if not self.port:
            self.port = free_port()
        for a in self.also_listen:
            if a in ("", "0.0.0.0", "::"):
                raise BrokerError(f"refusing to listen on the wildcard address {a!r}")

    def _hand_over(self) -> None:
        """Started as root, mosquitto drops to its own user: let that user read its files
        (and only them: the folder stays closed to everyone else)."""
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        for p in [self.confdir, *self.confdir.iterdir()]:
            os.chown(p, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def password_file(self, user: str) -> Path:
        """A file holding `user`'s password (mode 0600), for `--site-password-file`."""
        p = self.workdir / f"{user}.password"
        p.write_text(self.passwords[user] + "\n")
        p.chmod(0o600)
        return p

    def start(self, timeout_s: float = 10.0) -> None:
        conf = self.confdir / "mosquitto.conf"
        conf.write_text("\n".join([
            "per_listener_settings false", "allow_anonymous false",
            f"password_file {self.confdir / 'passwd'}", f"acl_file {self.confdir / 'acl'}",
            f"listener {self.port} 127.0.0.1",
            *(f"listener {self.port} {a}" for a in self.also_listen), "persistence false",
            "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
            "max_packet_size 65536", "max_inflight_messages 100", "max_queued_messages 1000",
            ""]))
        self._hand_over()
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited ({self.proc.returncode}): see "
                                  f"{self.workdir / 'mosquitto.log'}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        """Stop, and remove the folder of mosquitto's own files if one was made."""
        self.stop()
        if self.confdir != self.workdir:
            shutil.rmtree(self.confdir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
