"""Prometheus exposition of the rack (`GET /metrics`), read at scrape time.

Names follow Prometheus conventions: base units (volts, amperes, watts, celsius, seconds),
`powerflow_` prefix, one label set per node, device or segment.
"""

from __future__ import annotations

from collections.abc import Iterator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from powerflow.service import HostService

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
    def __init__(self, svc: HostService) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        m = svc.manager
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
        age = GaugeMetricFamily("powerflow_node_telemetry_age_seconds",
                                "Age of the node's latest telemetry (s).", labels=["node"])
        for row in m.snapshot():
            if row["telemetry_age_s"] is not None:
                age.add_metric([str(row["id"])], row["telemetry_age_s"])
        yield up
        yield lost
        yield age
        yield from gauges.values()
        if not svc.has_control:
            return
        ex = GaugeMetricFamily("powerflow_node_excluded",
                               "1 when the control loop has the node out of the plan.",
                               labels=["node"])
        for nid in m.nodes:
            ex.add_metric([str(nid)], 1.0 if svc.exclusion(nid)["excluded"] else 0.0)
        yield ex
        al = GaugeMetricFamily("powerflow_alarm_active",
                               "Active alarms of this kind and severity (count).",
                               labels=["kind", "severity"])
        counts: dict[tuple[str, str], int] = {}
        for alarm in svc.alarms():
            counts[(alarm.kind, alarm.severity)] = counts.get((alarm.kind, alarm.severity), 0) + 1
        for (kind, sev), k in sorted(counts.items()):
            al.add_metric([kind, sev], float(k))
        yield al
        safe = GaugeMetricFamily("powerflow_safe_mode",
                                 "1 while the supervisor holds the rack in safe mode.")
        safe.add_metric([], 1.0 if svc.safe_mode() else 0.0)
        yield safe
        meas = svc.measured()
        if meas is not None and meas.vmin is not None and meas.vmax is not None:
            bus = GaugeMetricFamily("powerflow_bus_measured_volts",
                                    "Bus voltage as the nodes measure it (fresh readings), V.",
                                    labels=["stat"])
            bus.add_metric(["min"], meas.vmin)
            bus.add_metric(["max"], meas.vmax)
            yield bus
        a = svc.allocation()
        if a is None:
            return
        st = GaugeMetricFamily("powerflow_allocation_state",
                               "1 for the state of the allocation in force.", labels=["state"])
        for name in ("optimal", "degraded", "safe"):
            st.add_metric([name], 1.0 if a.state == name else 0.0)
        yield st
        cyc = GaugeMetricFamily("powerflow_control_cycle_seconds",
                                "Time of the last control cycle (forecast + allocate) (s).")
        cyc.add_metric([], a.elapsed_ms / 1000.0)
        yield cyc
        periods = CounterMetricFamily("powerflow_control_periods", "Control periods run.")
        periods.add_metric([], float(svc.loop().periods))
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
        for dev, fc in svc.forecasts().items():
            for h, v in fc["mean_w"].items():
                fmean.add_metric([dev, str(h)], v)
            for h, v in fc["p95_w"].items():
                if v is not None:
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


def exposition(svc: HostService) -> bytes:
    """The rack's metrics in Prometheus' text format, read now."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RackCollector(svc))  # type: ignore[arg-type]
    return generate_latest(reg)
