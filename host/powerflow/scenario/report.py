"""What a scenario run leaves behind: verdicts on its expectations, a CSV of its time series and
a self-contained HTML report.

The report is one file with nothing to fetch: the plots are matplotlib figures written as
inline SVG (bus voltage of the three runs against the policy's band; per device demand, what
it was served, the forecast with its P95 and the cap; which converters ran; the energy lost,
cumulative, against both baselines), then the outcomes and the verdicts.
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from powerflow.scenario.runner import Series
from powerflow.scenario.spec import Expectation, Scenario

COLOURS = {"controlled": "#1d3557", "even": "#e76f51", "droop": "#2a9d8f"}


def verdicts(sc: Scenario, out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each expectation of the scenario file against the run: outcome, bound, value, and
    `passed` (None, skipped, for an outcome of the baselines in a run without them)."""
    rows = []
    for e in sc.expect:
        got = out.get(e.outcome)
        ok = None if got is None else e.holds(float(got))
        rows.append({"expectation": str(e), "outcome": e.outcome, "value": got, "passed": ok})
    return rows


def _word(c: dict[str, Any]) -> str:
    return "SKIP" if c["passed"] is None else "PASS" if c["passed"] else "FAIL"


def write_csv(series: dict[str, Series], path: str | Path) -> None:
    """Every run's time series, one row per (run, period); empty cells where a value does
    not exist (no forecast in the baselines, no cap when uncapped)."""
    cols = sorted({k for s in series.values() for k in s} - {"t_s"},
                  key=lambda k: (("." in k), k))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "t_s", *cols])
        for mode, s in series.items():
            for i, t in enumerate(s["t_s"]):
                w.writerow([mode, t, *("" if s[c][i] is None else s[c][i] for c in cols)])


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog or doctype


def _figures(sc: Scenario, series: dict[str, Series]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # no display; chosen before pyplot is imported
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "svg.fonttype": "none"})
    out = []
    rack, pol = sc.rack, sc.policy
    ctl = series["controlled"]
    minutes = sc.duration_s > 600
    scale, unit = (60.0, "min") if minutes else (1.0, "s")

    def tx(s: Series) -> list[float]:
        return [t / scale for t in s["t_s"]]

    fig, ax = plt.subplots(figsize=(9, 2.6))
    for mode, s in series.items():
        ax.plot(tx(s), s["bus_vmin_v"], color=COLOURS[mode], lw=1, label=f"{mode}: lowest segment")
        ax.plot(tx(s), s["bus_vmax_v"], color=COLOURS[mode], lw=0.6, ls=":",
                label=f"{mode}: highest")
    for v, lab in ((pol.v_min_pu, "band"), (pol.v_max_pu, None)):
        ax.axhline(v * rack.bus_voltage, color="#e63946", ls="--", lw=0.8, label=lab)
    ax.set(xlabel=f"time ({unit})", ylabel="bus voltage (V)")
    ax.legend(ncol=4, fontsize=6, loc="lower right")
    out.append(("Bus voltage", _svg(fig)))
    plt.close(fig)

    devs = [dv.id for dv in rack.devices]
    cols = 2
    rows = math.ceil(len(devs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 1.7 * rows), sharex=True, squeeze=False)
    for k, dev in enumerate(devs):
        ax = axes[k // cols][k % cols]
        t = tx(ctl)
        p95 = [float("nan") if v is None else v for v in ctl[f"{dev}.p95_w"]]
        fc = [float("nan") if v is None else v for v in ctl[f"{dev}.forecast_w"]]
        cap = [float("nan") if v is None else v for v in ctl[f"{dev}.cap_w"]]
        ax.fill_between(t, fc, p95, color="#a8dadc", alpha=0.7, lw=0, label="forecast to P95")
        ax.plot(t, ctl[f"{dev}.demand_w"], color="#1d3557", lw=1, label="demand")
        ax.plot(t, ctl[f"{dev}.served_w"], color="#457b9d", lw=0.6, ls="--", label="served")
        ax.plot(t, fc, color="#e76f51", lw=0.8, ls=":", label="forecast (mean)")
        if any(not math.isnan(c) for c in cap):
            ax.plot(t, cap, color="#e63946", lw=0.9, label="cap")
        ax.set_title(dev, fontsize=8, loc="left")
        ax.set_ylabel("W")
    for k in range(len(devs), rows * cols):
        axes[k // cols][k % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(f"time ({unit})")
    axes[0][0].legend(fontsize=6, ncol=3, loc="upper left")
    fig.tight_layout()
    out.append(("Devices: demand, served, forecast and cap (controlled run)", _svg(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rack.nodes) + 0.8))
    grid = [ctl[f"node{n.id}.on"] for n in rack.nodes]
    t = tx(ctl)
    ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="Greens", vmin=0, vmax=1.4,
              extent=(t[0] - (t[1] - t[0] if len(t) > 1 else 1), t[-1], len(grid) - 0.5, -0.5))
    ax.set_yticks(range(len(rack.nodes)), [f"node {n.id}" for n in rack.nodes])
    ax.set(xlabel=f"time ({unit})", title="converters on (dark) and off, controlled run")
    out.append(("Converter states", _svg(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 2.4))
    for mode, s in series.items():
        acc, cum = 0.0, []
        for loss in s["loss_w"]:
            acc += loss * sc.period_s / 3600.0
            cum.append(acc)
        ax.plot(tx(s), cum, color=COLOURS[mode], lw=1.2, label=mode)
    ax.set(xlabel=f"time ({unit})", ylabel="energy lost (Wh, cumulative)",
           title="conversion + distribution loss against the baselines")
    ax.legend(fontsize=7)
    out.append(("Loss against both baselines", _svg(fig)))
    plt.close(fig)
    return out


def write_html(sc: Scenario, out: dict[str, Any], series: dict[str, Series],
               checks: list[dict[str, Any]], path: str | Path) -> None:
    """The self-contained report (see the module docstring)."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in out.items())
    vrows = "".join(
        f"<tr class=\"{_word(c).lower()}\"><td>{_word(c)}</td><td>{e(c['expectation'])}</td>"
        f"<td>{e(str(c['value']))}</td></tr>" for c in checks)
    figs = "".join(f"<h2>{e(title)}</h2>\n{svg}\n" for title, svg in _figures(sc, series))
    failed = sum(c["passed"] is False for c in checks)
    verdict = ("no expectations declared" if not checks else
               f"{failed} expectation(s) FAILED" if failed else "all expectations met")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PowerFlow scenario: {e(sc.name)}</title>
<style>body {{ font: 14px system-ui, sans-serif; max-width: 960px; margin: 20px auto; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 10px; border-bottom: 1px solid #eee; }}
tr.pass td:first-child {{ color: #2a9d8f; font-weight: 700; }}
tr.fail td:first-child {{ color: #e63946; font-weight: 700; }}
tr.skip td:first-child {{ color: #888; }}
svg {{ max-width: 100%; height: auto; }}</style></head>
<body>
<h1>Scenario: {e(sc.name)}</h1>
<p>Rack <b>{e(sc.rack.name)}</b>, {sc.duration_s:g} s of rack time in periods of
{sc.period_s:g} s (seed {sc.seed}), in fast mode: the node firmware on a virtual clock against
the rack physics. Outcomes are measured in the physics. Verdict: <b id="verdict">{e(verdict)}</b>.</p>
<h2>Expectations</h2>
<table id="expectations">{vrows or '<tr><td>none declared ([expect] in the scenario file)</td></tr>'}</table>
{figs}
<h2>Outcomes</h2>
<table id="outcomes">{rows}</table>
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")


__all__ = ["Expectation", "verdicts", "write_csv", "write_html"]
