"""Device sources: Prometheus exporters scraped over real HTTP (served by prometheus_client's
own exposition server, in the formats of dcgm-exporter and node_exporter), agent samples."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from powerflow.control.controller import DeviceObs
from powerflow.adapters.devices import AgentDevices, PrometheusDevices, Scrape
from powerflow.emulator.rack_emulator import free_port


@pytest.fixture()
def exporters():
    reg = CollectorRegistry()
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", ["gpu", "UUID"], registry=reg)
    power = Gauge("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", ["gpu", "UUID"], registry=reg)
    util.labels("0", "GPU-a").set(10)
    util.labels("1", "GPU-b").set(73)
    power.labels("0", "GPU-a").set(95.0)
    power.labels("1", "GPU-b").set(412.5)
    cpu = Counter("node_cpu_seconds", "Seconds the CPUs spent in each mode.", ["cpu", "mode"],
                  registry=reg)
    cpu.labels("0", "idle").inc(100.0)
    cpu.labels("0", "user").inc(50.0)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    yield f"http://127.0.0.1:{port}/metrics", cpu
    server.shutdown()
    thread.join(timeout=2)


def test_dcgm_and_node_exporter_are_read(exporters) -> None:
    url, cpu = exporters
    src = PrometheusDevices([Scrape("gpu1", url, "dcgm", "1"), Scrape("cpu0", url, "node"),
                             Scrape("gpu9", "http://127.0.0.1:9/metrics", "dcgm")])

    async def go() -> dict[str, DeviceObs]:
        await src.poll()
        cpu.labels("0", "idle").inc(3.0)  # 3 s idle, 1 s busy since the last scrape
        cpu.labels("0", "user").inc(1.0)
        await src.poll()
        out = src.merge({"cpu0": DeviceObs(80.0)})
        await src.close()
        return out

    obs = asyncio.run(go())
    assert obs["gpu1"].power_w == 412.5 and obs["gpu1"].utilisation == pytest.approx(0.73)
    assert obs["cpu0"].power_w == 80.0  # the agent's power kept, the exporter's utilisation added
    assert obs["cpu0"].utilisation == pytest.approx(0.25)
    assert "gpu9" not in obs  # unreachable exporter: no sample, the forecaster widens its band


def test_agent_samples_get_their_caps_and_unknown_devices_are_refused() -> None:
    agents = AgentDevices({"gpu0"})
    assert agents.push("gpu0", 250.0, 0.9) is None
    agents.apply({"gpu0": 180.0}, None, None)
    assert agents.push("gpu0", 240.0, 0.9) == 180.0
    assert agents.read()["gpu0"].power_w == 240.0
    with pytest.raises(ValueError, match="no device 'gpu7'"):
        agents.push("gpu7", 1.0, None)


def test_rack_file_names_the_exporters(tmp_path) -> None:
    from powerflow.model.rack import RackError, load_rack
    from tests.conftest import ROOT

    text = (ROOT / "examples" / "racks" / "small.toml").read_text()
    good = text.replace('id = "gpu0"\n', 'id = "gpu0"\nexporter = "http://10.0.0.5:9400/metrics"\n'
                        'gpu = 2\n')
    (tmp_path / "g.toml").write_text(good)
    dv = load_rack(tmp_path / "g.toml").devices[0]
    assert (dv.exporter, dv.exporter_kind, dv.gpu) == ("http://10.0.0.5:9400/metrics", "dcgm", "2")
    (tmp_path / "b.toml").write_text(text.replace('id = "gpu0"\n', 'id = "gpu0"\nexporter = "x"\n'))
    with pytest.raises(RackError, match=r"\[\[device\]\] #1: field 'exporter'"):
        load_rack(tmp_path / "b.toml")
