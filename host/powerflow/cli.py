"""The `powerflow` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from powerflow.hostrun import SiteOptions


JSON_HELP = "print the host's answer as JSON (the API's response, field names as in /docs)"


def build_parser() -> argparse.ArgumentParser:
    from powerflow import __version__

    p = argparse.ArgumentParser(prog="powerflow", description=(
        "PowerFlow: predictive power management for racks of DC-DC converters."),
        epilog="Units: V, A, W, °C, s unless an option says otherwise. `powerflow COMMAND -h` "
               "explains each command.")
    p.add_argument("--version", action="version", version=f"powerflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_host(sub)
    _add_operator(sub)
    _add_scenario_and_faults(sub)
    _add_grid(sub)
    _add_site(sub)
    return p


def _add_site(sub: argparse._SubParsersAction) -> None:
    si = sub.add_parser("site", help="the site tier: many racks under one power tree (MQTT)")
    sis = si.add_subparsers(dest="site_command", required=True, metavar="SUBCOMMAND")
    sr = sis.add_parser("run", help="run a site controller (active, or standby if another is)")
    sr.add_argument("site", help="site file (.toml), e.g. examples/sites/two-pdus.toml")
    sr.add_argument("--broker", default=None, metavar="URL",
                    help="the site's MQTT broker, mqtt://HOST:PORT or mqtts://HOST:PORT "
                         "(default with --emulate: a Mosquitto of its own on a free port)")
    sr.add_argument("--id", default="site-1", metavar="ID",
                    help="this controller's id: its MQTT client id and user name (default "
                         "site-1)")
    sr.add_argument("--user", default=None, metavar="USER",
                    help="MQTT user name (default: the --id)")
    sr.add_argument("--password-file", default=None, metavar="FILE",
                    help="file holding the MQTT password (kept out of the process list)")
    sr.add_argument("--ca", default=None, metavar="FILE", help="CA file to trust (TLS)")
    sr.add_argument("--emulate", action="store_true",
                    help="also the racks, with a Mosquitto of its own: each rack with a `rack` "
                         "file a process of its own (fast mode under its own rack "
                         "controller), the others stand-ins over demand traces")
    sr.add_argument("--duration", type=_positive, default=None, metavar="S",
                    help="stop after S seconds (default: until Ctrl-C or SIGTERM)")
    sr.add_argument("--port", type=_tcp_port, default=8480, metavar="PORT",
                    help="TCP port of the site's read-only API, metrics and dashboard "
                         "(default 8480)")
    sr.add_argument("--no-api", action="store_true",
                    help="serve no API (a standby beside the active on one machine)")
    ss = sis.add_parser("scenario", help="scripted site scenarios (own Mosquitto, stand-ins)")
    sss = ss.add_subparsers(dest="site_scenario_command", required=True, metavar="SUBCOMMAND")
    ssr = sss.add_parser("run", help="run a site scenario; exit 1 when an expectation fails")
    ssr.add_argument("file", help="site scenario (.toml), e.g. "
                                  "examples/site-scenarios/feed-lost.toml")
    ssr.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    ssr.add_argument("--broker", default=None, metavar="URL",
                     help="a broker of your own, mqtt://HOST:PORT or mqtts://HOST:PORT (default: "
                          "a Mosquitto of its own on a free port); needs --password-dir, and "
                          "the file's events may not restart it")
    ssr.add_argument("--password-dir", default=None, metavar="DIR",
                     help="with --broker: a folder of USER.password files, one for each user "
                          "the scenario connects as (site-a, site-b, feed-monitor, every "
                          "rack's client id)")
    ssr.add_argument("--ca", default=None, metavar="FILE", help="with --broker: CA file to "
                                                                 "trust (TLS)")
    sr.add_argument("--period", type=_positive, default=None, metavar="S",
                    help="site period (s), overriding the site file's (leases scale with it)")


def _add_host(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo-node", help="one emulated node (real firmware) under the host")
    demo.add_argument("--duration", type=_positive, default=10.0, metavar="S",
                      help="seconds to run (default 10)")
    demo.add_argument("--link", choices=("pty", "tcp"), default="pty",
                      help="pty: a serial device opened with pyserial; tcp: loopback Ethernet")
    demo.add_argument("--vout", type=_positive, default=12.0, metavar="V",
                      help="output voltage, V (default 12; the demo node is rated 14 V)")
    run = sub.add_parser("run", help="run the host controller for a rack (the main job)")
    run.add_argument("rack", nargs="?", default=None,
                     help="rack file (.toml), e.g. examples/racks/small.toml (or `rack` in "
                          "--config)")
    run.add_argument("--config", default=None, metavar="FILE",
                     help="host settings (TOML): any option below by its long name, e.g. "
                          "port = 8470, tokens = \"/etc/powerflow/tokens.toml\"; flags "
                          "given override it")
    run.add_argument("--log-level", default="info", metavar="LEVEL",
                     choices=("debug", "info", "warning", "error"),
                     help="debug, info (default), warning or error; under systemd the lines "
                          "carry journald priorities")
    run.add_argument("--emulate", action="store_true", help="run the rack emulated on this machine")
    run.add_argument("--duration", type=_positive, default=None, metavar="S",
                     help="stop after S seconds (default: until Ctrl-C or SIGTERM)")
    run.add_argument("--port", type=_tcp_port, default=None, metavar="PORT",
                     help="TCP port of the API, dashboard and metrics (default 8470)")
    run.add_argument("--db", default=None, metavar="FILE",
                     help="telemetry database (SQLite file; default: in the state directory, "
                          "kept across runs for a real rack, new for each emulated run)")
    run.add_argument("--state-dir", default=None, metavar="DIR",
                     help="where the host keeps its databases (default $STATE_DIRECTORY, "
                          "else $XDG_STATE_HOME/powerflow, else ~/.local/state/powerflow)")
    run.add_argument("--faults", default=None, metavar="FILE",
                     help="scripted faults for the emulated rack (TOML, [[fault]] at_s = ...)")
    run.add_argument("--jobs", default=None, metavar="FILE",
                     help="with --emulate: the devices follow the [[job]] tables of this "
                          "scenario file (training, inference, batch, alibaba; with its seed "
                          "and trace_speed) in real time, not their rack-file traces; e.g. "
                          "examples/scenarios/training-jobs.toml")
    run.add_argument("--telemetry-ms", type=_telemetry_ms, default=500, metavar="MS", help="telemetry period asked of every node, ms (10..60000; "
                                        "default 500)")
    run.add_argument("--no-start", action="store_true",
                     help="do not bring the outputs up; leave the rack as the nodes boot (off)")
    run.add_argument("--no-control", action="store_true",
                     help="no control loop: every converter on at the bus voltage (droop sharing)")
    run.add_argument("--tokens", default=None, metavar="FILE",
                     help="API bearer tokens and their roles (TOML); without it the API is "
                          "open to local callers only")
    run.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                     help="address the API listens on (default 127.0.0.1; any other needs "
                          "--tokens and --tls-cert/--tls-key, or --insecure-http)")
    run.add_argument("--tls-cert", default=None, metavar="FILE",
                     help="serve HTTPS with this certificate chain (PEM); needs --tls-key")
    run.add_argument("--tls-key", default=None, metavar="FILE",
                     help="the certificate's private key (PEM)")
    run.add_argument("--insecure-http", action="store_true",
                     help="allow plain HTTP on a non-loopback --bind (secrets then cross the "
                          "network in clear text)")
    run.add_argument("--session-timeout", type=_positive, default=1800.0, metavar="S",
                     help="Redfish sessions end after S seconds unused (default 1800)")
    run.add_argument("--max-sessions", type=_sessions, default=64, metavar="N", help="Redfish sessions open at once, at most (1..10000; "
                                       "default 64)")
    run.add_argument("--site", default=None, metavar="URL",
                     help="join a site: its broker and name, mqtt://HOST:PORT/SITE (mqtts:// "
                          "for TLS); the allocator then obeys the site's budget lease")
    run.add_argument("--site-client", default=None, metavar="ID",
                     help="this rack's client id on the site broker (default: the rack's name)")
    run.add_argument("--site-user", default=None, metavar="USER",
                     help="MQTT user name (default: the client id)")
    run.add_argument("--site-password-file", default=None, metavar="FILE",
                     help="file holding the MQTT password")
    run.add_argument("--site-ca", default=None, metavar="FILE", help="CA file to trust (TLS)")
    run.add_argument("--site-period", type=_positive, default=2.0, metavar="S",
                     help="how often to report to the site (s, default 2: the site period)")
    run.add_argument("--physics-log", default=None, metavar="FILE",
                     help="with --emulate: append what the rack physics has every 0.1 s "
                          "(bus voltages V, currents A, device demand and served W) as JSON lines")


def _client(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    c = sub.add_parser(name, help=help, description=help)
    c.add_argument("--host", default=None, metavar="URL",
                   help="the host's API (default $POWERFLOW_HOST or http://127.0.0.1:8470; "
                        "token from $POWERFLOW_TOKEN, CA from $POWERFLOW_CACERT)")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    return c


def _add_operator(sub: argparse._SubParsersAction) -> None:
    _client(sub, "nodes", "the rack's nodes: state, V/I/T, derating, faults")
    w = _client(sub, "watch", "live view of the nodes")
    w.add_argument("--interval", type=_positive, default=0.5, metavar="S",
                   help="seconds between refreshes (default 0.5)")
    w.add_argument("--duration", type=_positive, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    st = _client(sub, "set", "change a node's output or a port (confirmed by the node); the "
                             "control loop must be paused, but a tie's port is pinned instead")
    st.add_argument("node", type=_count, help="node id, as in the rack file")
    st.add_argument("--vout", type=_positive, default=None, metavar="V",
                    help="output voltage setpoint, V (at most the node's vout_max)")
    onoff = st.add_mutually_exclusive_group()
    onoff.add_argument("--on", action="store_true", help="switch the output on")
    onoff.add_argument("--off", action="store_true", help="switch the output off")
    st.add_argument("--port", type=_index, default=None, metavar="P",
                    help="the node's mesh port, 0-based (with --open or --close)")
    oc = st.add_mutually_exclusive_group()
    oc.add_argument("--open", action="store_true",
                    help="open the port's switch (a tie's, while the loop runs: pinned open "
                         "in the policy, checked by the allocator)")
    oc.add_argument("--close", action="store_true", help="close the port's switch")
    cf = _client(sub, "clear-faults", "clear a node's latched faults (re-admits it to the plan)")
    cf.add_argument("node", type=_count, help="node id")
    hi = _client(sub, "history", "a node's telemetry history")
    hi.add_argument("node", type=_count, help="node id")
    hi.add_argument("metric", help="PMBus-style name, e.g. READ_VOUT (V), READ_IOUT (A), "
                                   "READ_TEMPERATURE_1 (°C)")
    hi.add_argument("--since", default="10m", metavar="WHEN",
                    help="90s, 10m, 2h, 1d ago, or a Unix time in s (default 10m)")
    hi.add_argument("--csv", action="store_true",
                    help="print CSV: t (Unix time, s) and the value in the metric's unit")
    _client(sub, "plan", "the next allocation and why, without applying it")
    _client(sub, "alarms", "the active alarms (bus sag, safe mode, converters excluded, late "
                           "cycles, stale telemetry), most severe first")
    po = _client(sub, "policy", "show or change the allocation policy (or switch profile)")
    po.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="change one field (repeatable), e.g. --set power_saving=false "
                         "--set 'priorities={\"gpu0\": 1}'; `policy` alone lists the fields")
    po.add_argument("--profile", default=None, metavar="NAME",
                    help="switch to a named profile of the rack file")
    hn = sub.add_parser("hint", help="job hints from a scheduler: a job starts, pauses or ends",
                        description="Tell the controller what a scheduler knows in advance "
                                    "(a Slurm prolog/epilog, a Kubernetes hook): devices start "
                                    "a job at a time with about W watts each for a duration, or "
                                    "a job ends; and what a training framework knows: the job "
                                    "pauses (a checkpoint, an evaluation) at about W watts for a "
                                    "while. Hints are advisory and expire at the job's end "
                                    "(see examples/schedulers/).")
    hns = hn.add_subparsers(dest="hint_command", required=True, metavar="start|pause|end|list")
    hs = _client(hns, "start", "devices start a job")
    hs.add_argument("job", help="the scheduler's job id")
    hs.add_argument("--devices", required=True, metavar="ID,ID,...",
                    help="the job's devices: rack device ids, comma-separated; a range "
                         "gpu0..gpu3 names gpu0, gpu1, gpu2 and gpu3")
    hs.add_argument("--watts", type=float, default=None, metavar="W",
                    help="about this many W per device while the job runs (default: as much "
                         "as each device may draw, its p_max_w)")
    hs.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                    help="how long it runs: 90s, 10m, 2h or seconds")
    hs.add_argument("--at", default="now", metavar="WHEN",
                    help="when it starts: now, +30s, +5m (from now) or a Unix time "
                         "(default now; at most an hour ahead)")
    hp = _client(hns, "pause", "a hinted job pauses (a checkpoint, an evaluation), then returns")
    hp.add_argument("job", help="the job id, as hinted at its start")
    hp.add_argument("--watts", type=float, required=True, metavar="W",
                    help="about this many W per device during the pause")
    hp.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                    help="how long it lasts: 15s, 2m or seconds")
    hp.add_argument("--at", default="now", metavar="WHEN",
                    help="when it starts: now, +5s (from now) or a Unix time (default now)")
    he = _client(hns, "end", "a job ends")
    he.add_argument("job", help="the scheduler's job id, as hinted at its start")
    he.add_argument("--at", default="now", metavar="WHEN",
                    help="when it ends: now, +30s, +5m or a Unix time (default now)")
    _client(hns, "list", "the hints in force")
    co = sub.add_parser("control", help="pause, resume or show the control loop",
                        description="Pause the control loop (setpoints become the operator's, "
                                    "with an alarm; leases keep the last allocation until then), "
                                    "resume it, or show its state.")
    cos = co.add_subparsers(dest="control_command", required=True, metavar="pause|resume|status")
    for name, help in (("pause", "pause the loop: manual `set` commands are allowed"),
                       ("resume", "hand the setpoints back to the loop"),
                       ("status", "periods run, period, late periods, safe mode")):
        _client(cos, name, help)


def _add_scenario_and_faults(sub: argparse._SubParsersAction) -> None:
    from powerflow.emulator.fault_kinds import FAULT_KINDS, SENSORS

    sc = sub.add_parser("scenario", help="scripted scenarios on the emulated rack")
    scs = sc.add_subparsers(dest="scenario_command", required=True, metavar="run")
    scr = scs.add_parser("run", help="run a scenario (fast mode), print measured outcomes and "
                                     "the verdict on each [expect]; exit 1 if one fails")
    scr.add_argument("file", help="scenario file (.toml), e.g. examples/scenarios/light-load.toml")
    scr.add_argument("--no-baselines", action="store_true",
                     help="skip the two baseline runs (even sharing, droop only)")
    scr.add_argument("--policy", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a field of the scenario's policy (repeatable), e.g. "
                          "--policy smoothing_up_w_per_s=200: the same scenario with and "
                          "without a choice")
    scr.add_argument("--arms", type=_arms, default=None, metavar="ARM,ARM,...",
                     help="run the controlled rack once per arm instead — predictive (the "
                          "forecaster), reactive (persistence), oracle (perfect foresight), "
                          "hinted (the forecaster and the jobs' hints as a scheduler and a "
                          "training loop send them) — and print what each cost and the share of the "
                          "reactive-to-oracle gap the forecaster closes (prediction_value; "
                          "hint_value for the hinted arm)")
    scr.add_argument("--json", action="store_true",
                     help="print the outcomes and the expectations' verdicts as JSON")
    scr.add_argument("--report", default=None, metavar="FILE.html",
                     help="write a self-contained HTML report: plots of bus voltage (V), device "
                          "demand/forecast/cap (W), converter states, loss (Wh) against the "
                          "baselines, and the verdicts")
    scr.add_argument("--csv", default=None, metavar="FILE",
                     help="write the time series: one row per run and period (t_s in s of rack "
                          "time, V, W)")
    scr.add_argument("--quiet", action="store_true",
                     help="no progress on stderr (it shows rack time done and an ETA)")
    scr.add_argument("--workers", type=_workers, default=None, metavar="N",
                     help="how many of the runs (controlled and baselines, or the arms) go at "
                          "once, each in a process of its own (default: all of them, up to "
                          "twice the CPUs); 1 runs them in turn in this process, so that "
                          "cycle_ms measures the controller alone")
    fa = sub.add_parser("fault", help="fault injection (emulated racks only)")
    fsub = fa.add_subparsers(dest="fault_command", required=True, metavar="inject")
    fi = _client(fsub, "inject", "inject a fault")
    fi.add_argument("kind", choices=FAULT_KINDS, help="what to inject")
    fi.add_argument("--node", type=_count, default=None, metavar="ID",
                    help="the node it acts on (every kind but ambient, load-spike, load-scale)")
    fi.add_argument("--sensor", default=None, choices=SENSORS, help="sensor-*: which sensor")
    fi.add_argument("--value", type=float, default=None, metavar="X",
                    help="sensor-stuck: the reading it sticks at (the sensor's SI unit)")
    fi.add_argument("--drift-per-s", dest="drift_per_s", type=float, default=None, metavar="X",
                    help="sensor-drift: drift per second (the sensor's SI unit per s)")
    fi.add_argument("--bit-error-rate", dest="bit_error_rate", type=float, default=None,
                    metavar="P", help="link-noise: probability per bit (0..0.1)")
    fi.add_argument("--drop-rate", dest="drop_rate", type=float, default=None, metavar="P",
                    help="link-noise: share of bytes lost (0..1)")
    fi.add_argument("--celsius", type=float, default=None, metavar="C",
                    help="ambient: temperature, °C (-40..80)")
    fi.add_argument("--device", default=None, metavar="ID", help="load-spike: the device id")
    fi.add_argument("--watts", type=float, default=None, metavar="W",
                    help="load-spike: extra demand, W")
    fi.add_argument("--seconds", type=float, default=None, metavar="S",
                    help="load-spike, node-pause: how long, s (default 5)")
    fi.add_argument("--scale", type=float, default=None, metavar="X",
                    help="load-scale: multiplies every device's demand (0..10)")

    fc = sub.add_parser("forecast", help="demand forecasting")
    fcs = fc.add_subparsers(dest="forecast_command", required=True, metavar="eval")
    ev = fcs.add_parser("eval", help="evaluate the forecasters strictly online on a trace")
    ev.add_argument("trace", help="CSV file (may be .gz)")
    ev.add_argument("--time-column", required=True, metavar="NAME",
                    help="the column of time stamps, s (Unix time or any origin)")
    ev.add_argument("--value-column", required=True, metavar="NAME",
                    help="the column to forecast (power, W, or any unit: errors are in it)")
    ev.add_argument("--exog", default="", metavar="A,B",
                    help="exogenous columns, comma separated (e.g. utilisation)")
    ev.add_argument("--resample", default="1s", metavar="PERIOD",
                    help="period, e.g. 1s, 10s, 1m (default 1s)")
    ev.add_argument("--horizons", default="1,10,60", metavar="H,H",
                    help="periods ahead to forecast (default 1,10,60)")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")


def _add_grid(sub: argparse._SubParsersAction) -> None:
    case_help = ("MATPOWER .m file, rack .toml file, built-in (ieee33), or a pandapower net: "
                 "pandapower:NAME (of pandapower.networks, e.g. pandapower:mv_oberrhein) or a "
                 "pandapower .json file")
    flow = sub.add_parser("flow", help="load flow of a case")
    flow.add_argument("case", help=case_help)
    flow.add_argument("--method", choices=("auto", "bibc", "newton"), default="auto",
                      help="bibc: the radial fixed-point method (Teng); newton: Newton-Raphson, "
                           "any topology; auto: bibc when radial (default)")
    flow.add_argument("--open", type=_branch_list, default=None, metavar="B,B,...",
                      help="open exactly these branches (1-based), close all others")
    flow.add_argument("--json", action="store_true", help="print the result as JSON (kW, p.u.)")
    rec = sub.add_parser("reconfigure", help="least-loss radial configuration")
    rec.add_argument("case", help=case_help)
    rec.add_argument("--top", type=_count, default=5, metavar="K",
                     help="list the K best configurations found (default 5)")
    rec.add_argument("--vmin", type=_pu, default=None, metavar="PU",
                     help="lowest bus voltage allowed, p.u. (> 0 and < 2; default: none)")
    rec.add_argument("--method", choices=("auto", "enumerate", "misocp", "scip", "exchange"),
                     default="auto",
                     help="enumerate: every radial configuration, exactly; misocp: PowerFlow's "
                          "branch-and-bound on a convex relaxation; scip: the SCIP solver; "
                          "exchange: branch exchange, a local optimum (no gap proved); "
                          "auto: enumerate when there are few enough, else misocp (default)")
    rec.add_argument("--profiles", default=None, metavar="FILE.csv",
                     help="plan a day: a configuration per interval (rows: a time, then scale "
                          "factors load, sgen, or load.N/sgen.N of a pandapower net)")
    rec.add_argument("--interval-h", type=_positive, default=None, metavar="H",
                     help="with --profiles: hours each row lasts (default 24 / rows)")
    rec.add_argument("--switch-cost", type=_nonneg, default=0.0, metavar="KWH",
                     help="with --profiles: cost of one switching operation, in kWh of loss "
                          "(default 0)")
    rec.add_argument("--max-ops-day", type=_count0, default=None, metavar="N",
                     help="with --profiles: switching operations allowed in the day")
    rec.add_argument("--max-ops-switch", type=_count0, default=None, metavar="N",
                     help="with --profiles: operations allowed per switch in the day")
    rec.add_argument("--write-net", default=None, metavar="OUT.json",
                     help="a pandapower net: write it with the chosen switch states "
                          "(pandapower JSON)")
    rec.add_argument("--time-limit", type=_positive, default=60.0, metavar="S",
                     help="seconds the searches may take (default 60)")
    rec.add_argument("--gap", type=_percent, default=1e-3, metavar="PCT",
                     help="networks too large to enumerate: stop once the optimality gap "
                          "proved is at most PCT %% (default 0.1)")
    rec.add_argument("--json", action="store_true", help="print the result as JSON (kW, p.u.)")
    opt = sub.add_parser("optimize", help="flexible buses (and reconfiguration) at least cost")
    opt.add_argument("case", help=case_help)
    opt.add_argument("--flex", type=_flex_list, default=None, metavar="BUS:PCT[:COST],...",
                     help="flexible buses, their +- range in percent and optional cost weight "
                          "(default: the case's)")
    opt.add_argument("--c-loss", type=_nonneg, required=True, metavar="X", help="cost per kW lost")
    opt.add_argument("--c-flex", type=_nonneg, required=True, metavar="Y",
                     help="cost per kW / kvar of flexibility used")
    opt.add_argument("--reconfigure", action="store_true", help="choose the configuration too")
    opt.add_argument("--vmin", type=_pu, default=None, metavar="PU",
                     help="lowest bus voltage allowed, p.u. (> 0 and < 2; default: none)")
    opt.add_argument("--json", action="store_true", help="print the result as JSON (kW, p.u.)")


# Argument types, in one wording per kind of error: "'x' is not a number", "'x' is not a whole
# number", "'x' is out of range: expected ..." (argparse prefixes the option's name).
def _number(text: str, whole: bool = False) -> float:
    try:
        v = int(text) if whole else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {'whole number' if whole else 'number'}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _out_of_range(text: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{text!r} is out of range: expected {expected}")


def _positive(text: str) -> float:
    v = _number(text)
    if not v > 0:
        raise _out_of_range(text, "a number greater than 0")
    return v


def _nonneg(text: str) -> float:
    v = _number(text)
    if not v >= 0:
        raise _out_of_range(text, "a number from 0 up")
    return v


def _whole_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        v = int(_number(text, whole=True))
        if not lo <= v <= hi:
            raise _out_of_range(text, f"a whole number from {lo} to {hi}")
        return v

    return parse


_tcp_port = _whole_in(1, 65535)
_count = _whole_in(1, 1_000_000)
_count0 = _whole_in(0, 1_000_000)
_index = _whole_in(0, 7)
_telemetry_ms = _whole_in(10, 60000)
_sessions = _whole_in(1, 10000)


def _workers(text: str) -> int:
    """--workers: how many of a scenario's runs go at once (1 to 64)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
    if not 1 <= v <= 64:
        raise _out_of_range(text, "a whole number from 1 to 64")
    return v


def _arms(text: str) -> tuple[str, ...]:
    from powerflow.scenario.arms import ARMS

    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms or len(set(arms)) != len(arms):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected arms from {', '.join(ARMS)}, each once, separated by commas")
    return arms


def _pu(text: str) -> float:
    v = _number(text)
    if not 0 < v < 2:
        raise _out_of_range(text, "a voltage in p.u. greater than 0 and less than 2")
    return v


def _percent(text: str) -> float:
    """A gap in percent, as a fraction."""
    v = _number(text)
    if not 0 <= v < 100:
        raise _out_of_range(text, "a percentage from 0 to less than 100")
    return v / 100.0


def _branch_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of branch numbers like "
                                         "7,9,14") from None
    if any(b < 1 for b in out):
        raise _out_of_range(text, "branch numbers from 1 up")
    return out


def _flex_list(text: str) -> tuple[dict[int, float], dict[int, float]]:
    """BUS:PERCENT[:COST],... -> ({bus: percent}, {bus: cost weight})."""
    pct, cost = {}, {}
    for item in text.split(","):
        parts = item.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            bus = int(parts[0])
            pct[bus] = float(parts[1])
            cost[bus] = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not BUS:PERCENT[:COST], e.g. 9:35 "
                                             "or 9:35:2") from None
        if not 0 <= pct[bus] <= 100 or not 0 <= cost[bus] < float("inf"):
            raise _out_of_range(item, "PERCENT from 0 to 100 and a finite COST from 0 up")
    return pct, cost


def _power(kw: float) -> str:
    """Losses for people: kW on feeders, W on a rack's busbars."""
    return f"{kw:.3f} kW" if kw >= 1 else f"{kw * 1e3:.3f} W"


def _print(obj: dict, as_json: bool, lines: list[str]) -> None:
    import json

    if as_json:
        print(json.dumps(obj, indent=1))
    else:
        print("\n".join(lines))


def _net_names(source: Any, open_branches: Any) -> dict[str, Any]:
    """The open branches as pandapower names them: line and trafo indices."""
    els = [source.map.elements[int(b)] for b in open_branches]
    return {"open_lines": sorted(i for k, i in els if k == "line"),
            "open_trafos": sorted(i for k, i in els if k == "trafo")}


def _write_net(source: Any, case: Any, open_branches: Any, path: str) -> None:
    import warnings

    import pandapower as pp

    from powerflow.grid.case import CaseError
    from powerflow.grid.pandapower_io import write_net

    net = write_net(source.net, source.map, case, open_branches)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.to_json(net, path)
    except OSError as e:
        raise CaseError(f"--write-net {path}: {e.strerror or e}") from None


def _plan_day(args: argparse.Namespace, case: Any, source: Any) -> int:
    """`reconfigure --profiles`: the day's plan, against the base and the best static one."""
    from powerflow.grid.day import plan_day, read_profiles

    prof = read_profiles(args.profiles, case, source, args.interval_h)
    plan = plan_day(case, prof, args.switch_cost, args.max_ops_day, args.max_ops_switch,
                    args.vmin, time_limit=args.time_limit)

    def names(opened: Any) -> Any:
        return (_net_names(source, opened)["open_lines"] if source is not None
                else [b + 1 for b in opened])

    key = "open_lines" if source is not None else "open_branches"
    switches = {(f"{source.map.elements[b][0]} {source.map.elements[b][1]}"
                 if source is not None else f"branch {b + 1}"): n
                for b, n in sorted(plan.per_switch.items())}
    out = {"case": case.name, "intervals": [
        {"time": lab, key: names(o), "loss_kw": round(w, 3)}
        for lab, o, w in zip(prof.labels, plan.open_sets, plan.loss_kw, strict=True)],
        "interval_h": prof.interval_h, "energy_kwh": plan.energy_kwh,
        "operations": plan.operations, "operations_per_switch": switches,
        "cost_kwh": plan.cost_kwh, "base_kwh": plan.base_kwh, "static_kwh": plan.static_kwh,
        f"static_{key}": None if plan.static_open is None else names(plan.static_open),
        "saved_vs_base_kwh": None if plan.base_kwh is None else plan.base_kwh - plan.energy_kwh,
        "saved_vs_static_kwh": (None if plan.static_kwh is None
                                else plan.static_kwh - plan.energy_kwh),
        "lower_bound_kwh": plan.lower_bound_kwh, "exact": plan.exact,
        "candidates": plan.candidates}
    lines = [f"{case.name}: {len(prof.labels)} intervals of {prof.interval_h:g} h: "
             f"{plan.energy_kwh:.1f} kWh lost, {plan.operations} switching operations "
             f"(cost {plan.cost_kwh:.1f} kWh); base configuration all day "
             + (f"{plan.base_kwh:.1f} kWh" if plan.base_kwh is not None else "infeasible")
             + "; best static " + (f"{plan.static_kwh:.1f} kWh" if plan.static_kwh is not None
                                   else "infeasible")
             + ("; exact" if plan.exact else f"; {plan.candidates} candidate configurations")]
    changes = [i for i in range(len(plan.open_sets))
               if i == 0 or plan.open_sets[i] != plan.open_sets[i - 1]]
    lines += [f"  from {prof.labels[i]}: open {names(plan.open_sets[i])}" for i in changes]
    _print(out, args.json, lines)
    return 0


def _grid_command(args: argparse.Namespace) -> int:
    from powerflow.grid import report
    from powerflow.grid.case import CaseError
    from powerflow.grid.cases import load_case_and_source, with_flex

    try:
        case, source = load_case_and_source(args.case)
        if getattr(args, "write_net", None) and source is None:
            raise CaseError("--write-net needs a pandapower net (pandapower:NAME or a .json "
                            "file)")
        if args.command == "flow":
            from powerflow.grid.loadflow import solve

            if args.open is not None:
                bad = [b for b in args.open if b > case.n_branch]
                if bad:
                    raise CaseError(f"{case.name} has {case.n_branch} branches; no branch {bad[0]}")
                case = case.with_open([b - 1 for b in args.open])
            r = solve(case, args.method)
            out = report.flow_report(r)
            if source is not None and r.converged:
                out.update(_net_names(source, (~case.closed).nonzero()[0]))
            lines = [f"{case.name}: " + (f"loss {_power(out['loss_kw'])}, {out['loss_kvar']:.3f} kvar; "
                                         f"Vmin {out['vmin_pu']:.5f} p.u. at bus {out['vmin_bus']} "
                                         f"({r.method}, {r.iterations} iterations)"
                                         if r.converged else f"no solution: {r.message}")]
            _print(out, args.json, lines)
            return 0 if r.converged else 1
        if args.command == "reconfigure" and args.profiles is not None:
            return _plan_day(args, case, source)
        if args.command == "reconfigure":
            from powerflow.grid.reconfiguration import reconfigure

            res = reconfigure(case, args.top, args.vmin, args.method, args.time_limit, args.gap)
            out = report.reconfig_report(res)
            if source is not None and res.best is not None:
                out.update(_net_names(source, res.best.open_branches))
                if args.write_net:
                    _write_net(source, case, res.best.open_branches, args.write_net)
                    out["written"] = args.write_net
            if res.best is None:
                lines = [f"{case.name}: {res.message}"]
            else:
                shown = (f"lines {out['open_lines']}" if source is not None
                         else str(out["open_branches"]))
                gap = ("not proved" if out["optimality_gap"] is None
                       else f"{res.optimality_gap:.2%}")
                lines = [f"{case.name}: open {shown}: loss {_power(out['loss_kw'])}, "
                         f"Vmin {out['vmin_pu']:.5f} p.u.; {res.radial_configurations:,} radial "
                         f"configurations, {res.evaluated:,} evaluated, gap {gap}, "
                         f"{res.elapsed_s:.2f} s ({res.method})"]
                lines += [f"  #{i + 1} open {t['open_branches']}: {_power(t['loss_kw'])}, "
                          f"Vmin {t['vmin_pu']:.5f}" for i, t in enumerate(out["top"])]
            _print(out, args.json, lines)
            return 0 if res.best is not None else 1
        from powerflow.grid.flex import solve_flex, solve_joint

        if args.flex is not None:
            case = with_flex(case, *args.flex)
        if not case.flex:
            raise CaseError(f"{case.name} has no flexible buses: give --flex BUS:PCT,...")
        fr = (solve_joint if args.reconfigure else solve_flex)(case, args.c_loss, args.c_flex,
                                                               args.vmin)
        out = report.flex_report(fr, case.name)
        if fr.flow is None:
            lines = [f"{case.name}: {fr.message}"]
        else:
            lines = [f"{case.name}: cost {fr.cost:.4f} ({args.c_loss} x {fr.loss_kw:.3f} kW lost, "
                     f"{fr.flex_used_kw:.2f} kW + {fr.flex_used_kvar:.2f} kvar of flexibility at "
                     f"{args.c_flex} x each bus's weight); open {out['open_branches']}; "
                     f"Vmin {out['vmin_pu']:.5f} p.u."]
            lines += [f"  bus {b}: {a['p_kw']:.2f} kW ({a['dp_kw']:+.2f}), {a['q_kvar']:.2f} kvar "
                      f"({a['dq_kvar']:+.2f})" for b, a in out["adjustments"].items()]
        _print(out, args.json, lines)
        return 0 if fr.feasible else 1
    except CaseError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2


def _client_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from powerflow import client as c

    if args.command == "set":
        if args.vout is None and not (args.on or args.off) and args.port is None:
            parser.error("set: give --vout V, --on/--off, or --port P with --open/--close")
        if args.port is not None and not (args.open or args.close):
            parser.error("set: --port needs --open or --close")
        if (args.open or args.close) and args.port is None:
            parser.error("set: --open/--close need --port P")
    fn = {"nodes": c.cmd_nodes, "watch": c.cmd_watch, "set": c.cmd_set,
          "clear-faults": c.cmd_clear, "history": c.cmd_history, "fault": c.cmd_fault,
          "plan": c.cmd_plan, "policy": c.cmd_policy, "alarms": c.cmd_alarms,
          "control": c.cmd_control, "hint": c.cmd_hint}[args.command]
    try:
        return fn(args)
    except c.ClientError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 1


def _forecast_command(args: argparse.Namespace) -> int:
    import json
    import re

    from powerflow.forecast.evaluate import TraceError, evaluate_file

    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", args.resample.strip())
    try:
        horizons = tuple(int(h) for h in args.horizons.split(","))
    except ValueError:
        horizons = ()
    if not m or not horizons or min(horizons) < 1:
        print("powerflow: error: --resample is like 1s, 10s or 1m; --horizons like 1,10,60 "
              "(periods ahead, >= 1)", file=sys.stderr)
        return 2
    period = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    exog = [c for c in args.exog.split(",") if c]
    try:
        out = evaluate_file(args.trace, args.time_column, args.value_column, exog, period, horizons)
    except TraceError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['trace']}: {out['periods']} periods of {period:g} s")
    print(f"{'horizon':>8} {'model':>12} {'MAE':>10} {'MASE':>7} {'P95 cover':>10} {'P95 margin':>11}")
    for h, per in out["horizons"].items():
        for name, r in per.items():
            print(f"{h:>8} {name:>12} {r['mae']:10.2f} {r['mase']:7.3f} {r['p95_coverage']:10.3f} "
                  f"{r['p95_margin']:11.2f}")
    return 0


class _Progress:
    """Progress of a scenario's runs on stderr: rack time done, runs finished, an ETA over
    all runs (which may run at once, one process each). On a terminal one line redrawn a few
    times a second; otherwise a line every 5 s of wall time."""

    def __init__(self, runs: int, period_s: float) -> None:
        self.runs, self.period_s = runs, period_s
        self.t0 = time.monotonic()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.frac: dict[str, float] = {}  # run -> share of its periods done

    def __call__(self, mode: str, done: int, total: int) -> None:
        self.frac[mode] = done / total
        now = time.monotonic()
        finished = sum(1 for f in self.frac.values() if f >= 1.0)
        if now - self.last < (0.25 if self.tty else 5.0) and done != total:
            return
        self.last = now
        frac = sum(self.frac.values()) / self.runs
        elapsed = now - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        line = (f"{mode}: {done * self.period_s:g} of {total * self.period_s:g} s of rack time "
                f"({finished} of {self.runs} runs done), {elapsed:.0f} s elapsed, "
                f"ETA {eta:.0f} s")
        if self.tty:
            print(f"\r\033[K{line}", end="" if finished < self.runs else "\n", file=sys.stderr,
                  flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def _scenario_command(args: argparse.Namespace) -> int:
    import json

    from powerflow.model.rack import RackError
    from powerflow.scenario.spec import load_scenario

    try:  # the file first: a refused one need not wait for the runner's imports
        sc = load_scenario(args.file)
        if args.policy:
            sc = _scenario_policy(sc, args.policy)
    except (RackError, ValueError) as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    from powerflow.scenario.report import verdicts, write_csv, write_html
    from powerflow.scenario.runner import run

    for opt in ("report", "csv"):  # refuse an unwritable path now, not after the run
        path = getattr(args, opt)
        if path is not None and not Path(path).resolve().parent.is_dir():
            print(f"powerflow: error: --{opt} {path}: no such directory", file=sys.stderr)
            return 2
    if args.arms is not None:
        return _scenario_arms(args, sc)
    series: dict = {}
    progress = None if args.quiet else _Progress(1 if args.no_baselines else 3, sc.period_s)
    out = run(sc, baselines=not args.no_baselines, progress=progress, series=series,
              workers=args.workers)
    checks = verdicts(sc, out)
    if args.csv:
        write_csv(series, args.csv)
    if args.report:
        write_html(sc, out, series, checks, args.report)
    failed = [c for c in checks if c["passed"] is False]
    if args.json:
        print(json.dumps({**out, "expectations": checks}, indent=1))
        return 1 if failed else 0
    print(f"{out['scenario']} on rack {out['rack']}: {out['periods']} periods "
          f"({out['duration_s']:g} s of rack time) in {out['elapsed_s']:.1f} s")
    for k, v in out.items():
        if k not in ("scenario", "rack", "periods", "duration_s", "elapsed_s"):
            print(f"  {k:40} {v}")
    for c in checks:
        word = "SKIP" if c["passed"] is None else "PASS" if c["passed"] else "FAIL"
        print(f"{word}  {c['expectation']}  "
              + ("(a baseline outcome: run without --no-baselines)" if c["passed"] is None
                 else f"(measured {c['value']})"))
    if checks:
        met = sum(c["passed"] is True for c in checks)
        print(f"{met} of {len(checks)} expectations met" + (
            f", {len(checks) - met - len(failed)} skipped" if len(checks) - met - len(failed)
            else ""))
    for opt, what in (("csv", "time series"), ("report", "report")):
        if getattr(args, opt):
            print(f"{what}: {getattr(args, opt)}")
    return 1 if failed else 0


def _scenario_policy(sc: Any, items: list[str]) -> Any:
    """The scenario with `--policy FIELD=VALUE` overrides (ValueError names what is wrong)."""
    import dataclasses
    import json

    from powerflow.control.policy import PolicyError

    changes: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--policy {item!r}: expected FIELD=VALUE")
        k, v = item.split("=", 1)
        try:
            changes[k.strip()] = json.loads(v)
        except ValueError:
            changes[k.strip()] = v.strip()  # a bare word, e.g. ties=optimise
    if "period_s" in changes:
        raise ValueError("--policy period_s: the scenario's period is period_s in [scenario]")
    devs = {dv.id: (dv.p_min_w, dv.p_max_w) for dv in sc.rack.devices}
    ties = {b.id for b in sc.rack.branches if b.switch == "tie"}
    nodes = {str(n.id): n.rating_w for n in sc.rack.nodes}
    try:
        return dataclasses.replace(sc, policy=sc.policy.changed(changes, devs, ties, nodes))
    except PolicyError as e:
        raise ValueError(f"--policy: {e}") from None


def _scenario_arms(args: argparse.Namespace, sc: Any) -> int:
    """`scenario run --arms`: one controlled run per arm, what each cost, what prediction
    is worth."""
    import json

    from powerflow.scenario.runner import run_arms

    for opt in ("report", "csv"):
        if getattr(args, opt):
            print(f"powerflow: error: --{opt} goes without --arms", file=sys.stderr)
            return 2
    progress = None if args.quiet else _Progress(len(args.arms), sc.period_s)
    out = run_arms(sc, args.arms, progress, workers=args.workers)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['scenario']} on rack {out['rack']} ({out['duration_s']:g} s of rack time), "
          f"{out['elapsed_s']:.1f} s")
    keys = [k for k in next(iter(out["arms"].values())) if k != "capped_wh_by_priority"]
    print(f"  {'outcome':24}" + "".join(f"{a:>14}" for a in out["arms"]))
    for k in keys:
        print(f"  {k:24}" + "".join(f"{out['arms'][a][k]:>14}" for a in out["arms"]))
    for name in ("prediction_value", "hint_value"):
        for k, v in out.get(name, {}).items():
            print(f"  {name:16} {k:22} " + ("- (no gap)" if v is None else f"{v:.2f}"))
    return 0


def _emulator_missing() -> str | None:
    """Why the emulated rack cannot run here (what to install), or None."""
    from powerflow.firmware import FirmwareError, check_emulator

    try:
        check_emulator()
    except FirmwareError as e:
        return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.config:
        from powerflow.hostconfig import ConfigError, load_run_config

        run_parser = _subparser(parser, "run")
        try:
            run_parser.set_defaults(**load_run_config(args.config, run_parser))
        except ConfigError as e:
            print(f"powerflow: error: {e}", file=sys.stderr)
            return 2
        args = parser.parse_args(argv)  # the flags given override the file
    if args.command == "run" and args.rack is None:
        parser.error("run: give a rack file, or `rack = \"FILE\"` in --config FILE")
    if (args.command == "run" and args.emulate) or args.command == "demo-node":
        missing = _emulator_missing()
        if missing is not None:
            print(f"powerflow: error: {missing}", file=sys.stderr)
            return 2
    if args.command in ("flow", "reconfigure", "optimize"):
        return _grid_command(args)
    if args.command in ("nodes", "watch", "set", "clear-faults", "history", "fault", "plan",
                        "policy", "alarms", "control", "hint"):
        return _client_command(args, parser)
    if args.command == "forecast":
        return _forecast_command(args)
    if args.command == "scenario":
        return _scenario_command(args)
    if args.command == "run":
        return _run_command(args, parser)
    if args.command == "site":
        return _site_command(args)
    if args.command == "demo-node":
        from powerflow.demo import run_demo

        if args.vout > 14.0:
            print("powerflow: error: --vout: the demo node is rated 14 V", file=sys.stderr)
            return 2
        import asyncio

        asyncio.run(run_demo(args.duration, args.link, vout=args.vout))
        return 0
    return 2


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for a in parser._actions:  # argparse has no public lookup of a subcommand's parser
        if isinstance(a, argparse._SubParsersAction):
            return a.choices[name]  # type: ignore[no-any-return]
    raise KeyError(name)


def _run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`powerflow run`: the files (rack, jobs, faults) read and checked first, with only the
    modules that reads need, so that a refused file costs a fraction of a second, not the
    import of the API and its server; then the API's options, then its socket bound before
    anything starts (a port in use is one line at once), then the host run."""
    if args.faults and not args.emulate:
        parser.error("--faults needs --emulate (faults are injected into the emulator)")
    if args.jobs and not args.emulate:
        parser.error("--jobs needs --emulate (jobs drive the emulated devices)")
    from powerflow.control.policy import load_rack_checked
    from powerflow.model.rack import RackError

    faults = None
    site = None
    jobs = None
    try:
        rk = load_rack_checked(args.rack)
        if args.jobs:
            from powerflow.scenario.spec import load_jobs

            jobs = load_jobs(args.jobs, rk)
        if args.site:
            site = _site_options(args, rk.name)
        if args.faults:
            from powerflow.emulator.faults import load_fault_script

            faults = load_fault_script(args.faults, [n.id for n in rk.nodes],
                                       [dv.id for dv in rk.devices])
    except ValueError as e:  # RackError included
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    from powerflow.hostrun import ApiOptions, OptionsError, load_tokens, run_host
    from powerflow.logs import setup_logging
    from powerflow.process import ListenError, listen
    from powerflow.ui import DEFAULT_PORT

    try:
        tokens = load_tokens(args.tokens) if args.tokens else None
    except OptionsError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    try:
        api = ApiOptions(tokens=tokens, bind=args.bind, tls_cert=args.tls_cert,
                         tls_key=args.tls_key, insecure_http=args.insecure_http,
                         session_timeout_s=args.session_timeout, max_sessions=args.max_sessions)
        api.check()
    except OptionsError as e:
        parser.error(str(e))
    try:
        sock = listen(args.bind, args.port or DEFAULT_PORT)
    except ListenError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    interactive = setup_logging(args.log_level)
    import asyncio

    from powerflow.process import StopDeadline

    try:
        with StopDeadline() as deadline:
            asyncio.run(run_host(args.rack, args.emulate, args.duration,
                                 args.port or DEFAULT_PORT, args.db, not args.no_start,
                                 telemetry_ms=args.telemetry_ms, faults=faults,
                                 control=not args.no_control, api=api,
                                 physics_log=args.physics_log, sock=sock, state=args.state_dir,
                                 live=interactive, site=site, deadline=deadline, jobs=jobs))
    except RackError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    return 0


def _site_scenario(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from powerflow.site.broker import BrokerError
    from powerflow.site.mqtt import AddressError, BrokerAddress
    from powerflow.site.scenario import (ExternalBroker, SiteScenarioError, load_site_scenario,
                                         run_site_scenario)

    try:
        broker = None
        if args.broker is not None:
            BrokerAddress.parse(args.broker, ca=args.ca)  # the URL and CA checked now
            if args.password_dir is None or not Path(args.password_dir).is_dir():
                raise AddressError("--broker needs --password-dir DIR: a folder of "
                                   "USER.password files")
            broker = ExternalBroker(args.broker, Path(args.password_dir), args.ca)
        elif args.password_dir is not None or args.ca is not None:
            raise AddressError("--password-dir and --ca go with --broker")
        sc = load_site_scenario(args.file)
        with tempfile.TemporaryDirectory(prefix="pf-site-scenario-") as d:
            out = run_site_scenario(sc, Path(d), broker)
    except (SiteScenarioError, BrokerError, AddressError) as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k in ("breaker_violations", "priority_inversions", "lease_violations",
                  "max_failover_s", "max_reaction_s", "max_reaction_periods",
                  "stranded_w_mean"):
            print(f"{k:22s} {out[k]}")
        for k, v in out["expect"].items():
            print(f"expect {k} <= {v['at_most']}: {'ok' if v['ok'] else 'FAILED'}")
    return 0 if out["passed"] else 1


def _site_options(args: argparse.Namespace, rack_name: str) -> SiteOptions:
    """`--site mqtt://HOST:PORT/SITE` and its credentials, checked (ValueError says what)."""
    from urllib.parse import urlsplit

    from powerflow.hostrun import SiteOptions
    from powerflow.model.site import CLIENT_RE
    from powerflow.site.mqtt import BrokerAddress

    name = urlsplit(args.site).path.strip("/")
    if not CLIENT_RE.fullmatch(name):
        raise ValueError(f"--site {args.site}: expected mqtt://HOST:PORT/SITE with the site's "
                         "name (letters, digits and . _ -) as the path")
    client = args.site_client or rack_name
    if not CLIENT_RE.fullmatch(client):
        raise ValueError(f"--site-client {client!r}: letters, digits and . _ - (at most 64)")
    addr = BrokerAddress.parse(args.site.rsplit("/", 1)[0] if urlsplit(args.site).path else
                               args.site, args.site_user or client, args.site_password_file,
                               args.site_ca)
    return SiteOptions(addr=addr, site=name, client=client, period_s=args.site_period)


def _site_command(args: argparse.Namespace) -> int:
    """`powerflow site run`: the site file and broker options checked, the API port bound,
    then the controller run."""
    import asyncio

    from powerflow.control.policy import load_rack_checked
    from powerflow.logs import setup_logging
    from powerflow.model.rack import RackError
    from powerflow.model.site import SiteError, load_site
    from powerflow.process import ListenError, listen
    from powerflow.site.broker import BrokerError
    from powerflow.site.mqtt import AddressError, BrokerAddress

    if args.site_command == "scenario":
        return _site_scenario(args)
    try:
        site = load_site(args.site)
        addr = None
        if args.emulate and args.broker is not None:
            raise AddressError("--emulate starts a broker of its own (with the racks' "
                               "passwords): leave out --broker")
        if args.emulate:
            for r in site.racks:  # every rack file readable before anything starts
                if r.rack_file is not None:
                    load_rack_checked(r.rack_file)
        if args.broker is not None:
            addr = BrokerAddress.parse(args.broker, args.user or args.id, args.password_file,
                                       args.ca)
        elif not args.emulate:
            raise AddressError("--broker URL is needed (or --emulate, which starts its own)")
        sock = None if args.no_api else listen("127.0.0.1", args.port)
    except (SiteError, AddressError, ListenError, RackError) as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    setup_logging("info")
    from powerflow.process import StopDeadline
    from powerflow.siterun import run_site  # after the checks: the server's imports take ~1 s

    try:
        with StopDeadline() as deadline:
            asyncio.run(run_site(args.site, addr, args.id, args.emulate, args.duration, sock,
                                 args.period, deadline=deadline))
    except BrokerError as e:
        print(f"powerflow: error: {e}", file=sys.stderr)
        return 2
    return 0


def entry() -> int:
    """Console entry point: `main` with a quiet exit when the reader of stdout goes away,
    and one line, not a traceback, when the user interrupts a command (130, as a shell
    reports SIGINT)."""
    try:
        return main()
    except BrokenPipeError:
        sys.stderr.close()
        return 1
    except KeyboardInterrupt:
        print("\npowerflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
