"""A host of its own for a test: a Linux network namespace joined to this one by a veth
pair, whose link the test cuts and heals with `ip link` (a real partition: packets are lost,
no connection is reset, both ends find out only by their own timeouts).

The addresses are a /30 from 198.18.0.0/15 (RFC 2544's range for tests), reached only over
the pair the test made; nothing is routed beyond it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys


def can_make_namespaces() -> str | None:
    """None when this process may make network namespaces; else why not."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"pfprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` refused here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class NetHost:
    """Namespace `name` with `lo` up and one link to this namespace: `host_addr` here,
    `addr` there."""

    def __init__(self, k: int) -> None:
        tag = f"{os.getpid() % 100000}{k}"
        self.name = f"pf-test-{tag}"
        self.here, there = f"pfh{tag}", f"pfn{tag}"  # interface names: <= 15 characters
        net = (os.getpid() % 250, 4 * k)
        self.host_addr = f"198.18.{net[0]}.{net[1] + 1}"
        self.addr = f"198.18.{net[0]}.{net[1] + 2}"
        ip("netns", "add", self.name)
        try:
            ip("link", "add", self.here, "type", "veth", "peer", "name", there)
            ip("link", "set", there, "netns", self.name)
            ip("addr", "add", f"{self.host_addr}/30", "dev", self.here)
            ip("link", "set", self.here, "up")
            ip("-n", self.name, "addr", "add", f"{self.addr}/30", "dev", there)
            ip("-n", self.name, "link", "set", there, "up")
            ip("-n", self.name, "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def argv(self, *args: str) -> list[str]:
        """A command line that runs `args` inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def cut(self) -> None:
        ip("link", "set", self.here, "down")

    def heal(self) -> None:
        ip("link", "set", self.here, "up")

    def get_json(self, url: str, timeout_s: float = 3.0) -> object:
        """GET `url` from inside the namespace (its own 127.0.0.1) and decode the JSON."""
        code = ("import json,sys,urllib.request;"
                f"sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout={timeout_s})"
                ".read().decode())")
        r = subprocess.run(self.argv(sys.executable, "-c", code, url), capture_output=True,
                           text=True, timeout=timeout_s + 5)
        if r.returncode != 0:
            raise OSError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
        return json.loads(r.stdout)

    def close(self) -> None:
        # deleting the namespace deletes its end of the pair, and with it this end
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.here], capture_output=True)
