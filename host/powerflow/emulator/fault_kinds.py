"""The names of the fault vocabulary (emulator/faults.py holds the model and how each is
applied); kept free of dependencies so that the CLI can list them without loading the rest."""

from __future__ import annotations

from typing import Literal, get_args

FaultKind = Literal["converter-failure", "converter-repair", "sensor-stuck", "sensor-drift",
                    "sensor-clear", "link-cut", "link-noise", "link-clear", "node-reboot",
                    "node-kill", "node-pause", "ambient", "load-spike", "load-scale"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
NO_NODE_KINDS = ("ambient", "load-spike", "load-scale")  # the rest act on one node
Sensor = Literal["vout", "iout", "temp1", "temp2", "ambient", "vin", "iin", "humidity"]
SENSORS: tuple[str, ...] = get_args(Sensor)
