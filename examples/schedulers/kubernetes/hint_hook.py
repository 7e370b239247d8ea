"""PowerFlow job hints from Kubernetes: a small event hook.

Watches pods and tells the host when an annotated pod starts running and when it ends:

    kubectl get pods --all-namespaces --watch --output-watch-events -o json \\
        | python hint_hook.py

(or run it in a pod with a service account that may list and watch pods). A pod opts in with
annotations; the device ids are the rack's:

    metadata:
      annotations:
        powerflow.io/devices: "gpu0,gpu1"     # the devices it runs on (required)
        powerflow.io/watts: "280"             # W per device while it runs (default: each
                                              # device's p_max_w)
        powerflow.io/duration: "7200"         # s it is expected to run (default 86400)

The host, token and CA come from POWERFLOW_HOST, POWERFLOW_TOKEN (an operator token) and
POWERFLOW_CACERT, as for the CLI. Hints are advisory: a refused hint is logged, not retried.
Standard library only; `hints_for(event)` is the whole policy and is what the tests check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

ANNOTATION = "powerflow.io/"


def hints_for(event: dict[str, Any]) -> list[list[str]]:
    """The `powerflow hint …` arguments one watch event calls for (none, a start or an end).
    The job id is the pod's namespace/name/uid, so a re-created pod is a new job."""
    pod = event.get("object", event)
    meta = pod.get("metadata", {})
    notes = meta.get("annotations") or {}
    devices = notes.get(ANNOTATION + "devices")
    if not devices:
        return []
    job = f"k8s-{meta.get('namespace', 'default')}/{meta.get('name', '')}/{meta.get('uid', '')[:8]}"
    phase = pod.get("status", {}).get("phase")
    if event.get("type") == "DELETED" or phase in ("Succeeded", "Failed"):
        return [["end", job]]
    if phase == "Running":
        watts = notes.get(ANNOTATION + "watts")
        return [["start", job, "--devices", devices, *(["--watts", watts] if watts else []),
                 "--for", notes.get(ANNOTATION + "duration", "86400")]]
    return []


def events(stream: Any) -> Any:
    """The JSON documents of `kubectl … --watch -o json` (concatenated, not one per line)."""
    dec = json.JSONDecoder()
    buf = ""
    for chunk in stream:
        buf += chunk
        while True:
            buf = buf.lstrip()
            try:
                obj, end = dec.raw_decode(buf)
            except ValueError:
                break
            buf = buf[end:]
            yield obj


def main() -> int:
    started: set[str] = set()
    for ev in events(sys.stdin):
        for args in hints_for(ev):
            job = args[1]
            if args[0] == "start" and job in started:
                continue  # a running pod is reported again on every change
            if args[0] == "end" and job not in started:
                continue
            r = subprocess.run(["powerflow", "hint", *args], capture_output=True, text=True)
            if r.returncode == 0:
                (started.add if args[0] == "start" else started.discard)(job)
            print(f"powerflow hint {' '.join(args[:2])}: "
                  f"{(r.stdout or r.stderr).strip()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
