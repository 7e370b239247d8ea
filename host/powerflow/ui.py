"""Shared bits of the operator interface, light enough for the CLI client to import quickly."""

from __future__ import annotations

from typing import Any

DEFAULT_PORT = 8470


def node_table(rows: list[dict[str, Any]], title: str) -> Any:
    """The nodes as a `rich` table (rich imported here, not by every command)."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("node", "state", "mode", "Vout V", "Iout A", "P W", "T °C", "Ilim A", "faults",
                "lease ms", "rejects", "plan"):
        t.add_column(col, justify="right")

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    styles = {"online": "", "lost": "red", "connecting": "yellow", "link-error": "red"}
    for r in rows:
        style = styles.get(r["state"], "")
        t.add_row(str(r["id"]), r["state"], r["mode"], f(r["vout"], ".3f"), f(r["iout"], ".2f"),
                  f(r["pout"], ".1f"), f(r["temperature"], ".1f"), f(r["iout_limit"], ".1f"),
                  f(r["faults"], "#06x"), f(r["lease_left_ms"], "d"), str(r["rejects"]),
                  "out" if r.get("excluded") else "in" if "excluded" in r else "-",
                  style="red" if r.get("excluded") else style)
    return t
