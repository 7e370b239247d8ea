"""Prometheus exposition of the rack (`GET /metrics`), read at scrape time.

Names follow Prometheus conventions: base units (volts, amperes, watts, celsius, seconds),
`powerflow_` prefix, one label set per node, device or segment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from powerflow.manager import NodeManager

NODE_GAUGES = (  # telemetry field, metric, help
    ("READ_VOUT", "powerflow_node_output_volts", "Node output voltage (V)."),
    ("READ_IOUT", "powerflow_node_output_amperes", "Node output current (A), + sourcing."),
    ("READ_POUT", "powerflow_node_output_watts", "Node output power (W)."),
    ("READ_VIN", "powerflow_node_input_volts", "Node input voltage (V)."),
    ("READ_IIN", "powerflow_node_input_amperes", "Node input current (A)."),
    ("READ_TEMPERATURE_1", "powerflow_node_temperature_celsius", "Converter temperature (degC)."),
    ("READ_TEMPERATURE_3", "powerflow_node_ambient_celsius", "Ambient temperature (degC)."),
    ("IOUT_LIMIT", "powerflow_node_current_limit_amperes", "Derated current limit (A)."),
    ("VOUT_COMMAND", "powerflow_node_vout_command_volts", "Commanded output voltage (V)."),
    ("STATUS_WORD", "powerflow_node_status_word", "PMBus STATUS_WORD."),
    ("FAULTS", "powerflow_node_faults", "Latched FAULT_* bits."),
    ("MODE", "powerflow_node_mode", "Mode: 0 off, 1 soft-start, 2 CV, 3 CC, 4 failsafe, 5 fault."),
)


class RackCollector:
    def __init__(self, manager: NodeManager, control: Any = None) -> None:
        self.manager = manager
        self.control = control

    def collect(self) -> Iterator[Metric]:
        m = self.manager
        up = GaugeMetricFamily("powerflow_node_up", "1 when the node's link is online.",
                               labels=["node", "segment"])
        lost = CounterMetricFamily("powerflow_node_lost", "Times the node was declared lost.",
                                   labels=["node"])
        gauges = {f: GaugeMetricFamily(name, doc, labels=["node"]) for f, name, doc in NODE_GAUGES}
        for nid, ns in m.nodes.items():
            up.add_metric([str(nid), ns.node.segment], 1.0 if ns.state == "online" else 0.0)
            lost.add_metric([str(nid)], float(ns.lost_count))
            if ns.state != "online":
                continue  # a lost node's last readings are not current: leave them out
            for f, g in gauges.items():
                v = ns.telemetry.get(f)
                if isinstance(v, int | float):
                    g.add_metric([str(nid)], float(v))
        yield up
        yield lost
        yield from gauges.values()
        c = self.control
        if c is None or c.ctrl.last is None:
            return
        a = c.ctrl.last
        cyc = GaugeMetricFamily("powerflow_control_cycle_seconds",
                                "Time of the last control cycle (forecast + allocate) (s).")
        cyc.add_metric([], a.elapsed_ms / 1000.0)
        yield cyc
        periods = CounterMetricFamily("powerflow_control_periods", "Control periods run.")
        periods.add_metric([], float(c.periods))
        yield periods
        fb = GaugeMetricFamily("powerflow_allocation_safe", "1 when the safe allocation is out.")
        fb.add_metric([], 1.0 if a.fallback else 0.0)
        yield fb
        loss = GaugeMetricFamily("powerflow_predicted_loss_watts",
                                 "Predicted loss of the allocation (W).", labels=["kind"])
        loss.add_metric(["conversion"], a.predicted["loss_conversion_w"])
        loss.add_metric(["distribution"], a.predicted["loss_distribution_w"])
        yield loss
        share = GaugeMetricFamily("powerflow_node_planned_watts", "Planned output (W).",
                                  labels=["node"])
        for nid, n in a.nodes.items():
            share.add_metric([str(nid)], n["share_w"])
        yield share
        fmean = GaugeMetricFamily("powerflow_device_forecast_watts",
                                  "Forecast device demand (W).", labels=["device", "horizon"])
        fup = GaugeMetricFamily("powerflow_device_forecast_p95_watts",
                                "P95 bound of the device demand forecast (W).",
                                labels=["device", "horizon"])
        for dev, f in c.ctrl.forecasts.items():
            for h, v in f.mean_w.items():
                fmean.add_metric([dev, str(h)], v)
            for h, v in f.upper_w.items():
                if v != float("inf"):
                    fup.add_metric([dev, str(h)], v)
        yield fmean
        yield fup
        cap = GaugeMetricFamily("powerflow_device_cap_watts",
                                "Device power cap in force (W); absent when uncapped.",
                                labels=["device"])
        for dev, v in a.caps.items():
            if v is not None:
                cap.add_metric([dev], v)
        yield cap
        bat = GaugeMetricFamily("powerflow_battery_planned_watts",
                                "Planned battery power (W), + discharging.")
        bat.add_metric([], a.battery_w)
        yield bat


def exposition(manager: NodeManager, control: Any = None) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RackCollector(manager, control))  # type: ignore[arg-type]
    return generate_latest(reg)
