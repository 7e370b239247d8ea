"""Read MATPOWER case files (`.m`, case format version 2).

Besides the `mpc.X = ...` data, many distribution cases end with MATLAB
statements that scale their data (ohm to p.u., kW to MW). Those are run by a
small evaluator that accepts only what such statements use: arithmetic,
`mpc` fields and `mpc.F(rows, cols)` indexing with MATPOWER's column names.
Anything else is an error naming the line, never silently skipped.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np

from powerflow.grid.case import Case, CaseError
from powerflow.tomlfile import read_text

# MATPOWER's idx_bus / idx_brch / idx_gen (1-based column numbers)
COLUMNS = {
    "PQ": 1, "PV": 2, "REF": 3, "NONE": 4,
    "BUS_I": 1, "BUS_TYPE": 2, "PD": 3, "QD": 4, "GS": 5, "BS": 6, "BUS_AREA": 7, "VM": 8,
    "VA": 9, "BASE_KV": 10, "ZONE": 11, "VMAX": 12, "VMIN": 13, "LAM_P": 14, "LAM_Q": 15,
    "MU_VMAX": 16, "MU_VMIN": 17,
    "F_BUS": 1, "T_BUS": 2, "BR_R": 3, "BR_X": 4, "BR_B": 5, "RATE_A": 6, "RATE_B": 7,
    "RATE_C": 8, "TAP": 9, "SHIFT": 10, "BR_STATUS": 11, "PF": 14, "QF": 15, "PT": 16, "QT": 17,
    "MU_SF": 18, "MU_ST": 19, "ANGMIN": 12, "ANGMAX": 13, "MU_ANGMIN": 20, "MU_ANGMAX": 21,
    "GEN_BUS": 1, "PG": 2, "QG": 3, "QMAX": 4, "QMIN": 5, "VG": 6, "MBASE": 7, "GEN_STATUS": 8,
    "PMAX": 9, "PMIN": 10,
}
REF = COLUMNS["REF"]  # the bus type of a reference (feed) bus
# zero-based column indices into mpc.bus, mpc.branch and mpc.gen as read here
BUS_I, BUS_TYPE, PD, QD, VM, BASE_KV, VMAX, VMIN = (
    COLUMNS[k] - 1 for k in ("BUS_I", "BUS_TYPE", "PD", "QD", "VM", "BASE_KV", "VMAX", "VMIN"))
F_BUS, T_BUS, BR_R, BR_X, TAP, BR_STATUS = (
    COLUMNS[k] - 1 for k in ("F_BUS", "T_BUS", "BR_R", "BR_X", "TAP", "BR_STATUS"))
GEN_BUS, PG, QG, VG, GEN_STATUS = (
    COLUMNS[k] - 1 for k in ("GEN_BUS", "PG", "QG", "VG", "GEN_STATUS"))
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
            ast.List, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


def _strip_comment(line: str) -> str:
    out, quoted = [], False
    for ch in line:
        if ch == "'":
            quoted = not quoted
        if ch == "%" and not quoted:
            break
        out.append(ch)
    return "".join(out)


def _statements(text: str) -> list[tuple[int, str]]:
    """Split into (line number, statement) on ';' outside brackets, joining '...' continuations."""
    stmts: list[tuple[int, str]] = []
    buf, depth, start = "", 0, 1
    for no, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        cont = line.rstrip().endswith("...")
        if cont:
            line = line.rstrip()[:-3]
        if not buf.strip():
            start = no
        for ch in line:
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            if ch == ";" and depth == 0:
                if buf.strip():
                    stmts.append((start, buf.strip()))
                buf = ""
                start = no
                continue
            buf += ch
        buf += " " if cont else ("\n" if depth > 0 else " ")
        if depth == 0 and not cont and buf.strip() and re.match(r"^\s*function\b", buf):
            buf = ""  # the function header line has no ';'
    if buf.strip():
        stmts.append((start, buf.strip()))
    return stmts


def _matrix(body: str, where: str) -> np.ndarray:
    rows = []
    for row in re.split(r"[;\n]", body):
        vals = row.replace(",", " ").split()
        if vals:
            try:
                rows.append([float(v) for v in vals])
            except ValueError as e:
                raise CaseError(f"{where}: not a number in a matrix: {e}") from None
    if not rows:
        return np.zeros((0, 0))
    width = max(len(r) for r in rows)
    if any(len(r) != width for r in rows):
        raise CaseError(f"{where}: matrix rows of different lengths")
    return np.array(rows)


class _Evaluator:
    def __init__(self, mpc: dict[str, Any], where: str) -> None:
        self.mpc = mpc
        self.vars: dict[str, Any] = dict(COLUMNS)
        self.where = where

    def _translate(self, expr: str) -> str:
        expr = re.sub(r"\[([^\]]*)\]", lambda m: "[" + ",".join(m.group(1).replace(",", " ").split())
                      + "]", expr)
        expr = re.sub(r"mpc\.(\w+)\s*\(", r'_idx("\1", ', expr)
        expr = re.sub(r"mpc\.(\w+)", r'_field("\1")', expr)
        expr = re.sub(r"\(\s*:\s*,", "(_ALL,", expr).replace(", :", ", _ALL")
        return expr.replace("^", "**")

    def eval(self, expr: str) -> Any:
        src = self._translate(expr)
        try:
            tree = ast.parse(src, mode="eval")
        except SyntaxError:
            raise CaseError(f"{self.where}: cannot read expression {expr!r}") from None
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED) or (
                    isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name)
                                                        and node.func.id in ("_idx", "_field"))):
                raise CaseError(f"{self.where}: unsupported expression {expr!r}")
        ns = dict(self.vars, _idx=self._idx, _field=self._field, _ALL=slice(None))
        try:
            return eval(compile(tree, "<case>", "eval"), {"__builtins__": {}}, ns)  # noqa: S307
        except NameError as e:
            raise CaseError(f"{self.where}: {e}") from None

    def _field(self, name: str) -> Any:
        if name not in self.mpc:
            raise CaseError(f"{self.where}: mpc.{name} is not defined")
        return self.mpc[name]

    @staticmethod
    def _index(i: Any) -> Any:
        if isinstance(i, slice):
            return i
        if isinstance(i, list):
            return [int(v) - 1 for v in i]
        return int(i) - 1

    def _idx(self, name: str, rows: Any, cols: Any) -> Any:
        return np.asarray(self._field(name))[self._index(rows), self._index(cols)]

    def assign(self, lhs: str, rhs: str) -> None:
        value = self.eval(rhs)
        m = re.fullmatch(r"mpc\.(\w+)\s*\(\s*(.+?)\s*,\s*(.+?)\s*\)", lhs)
        if m:
            arr = np.asarray(self._field(m.group(1)), dtype=float)
            rows = self.eval(m.group(2)) if m.group(2) != ":" else slice(None)
            cols = self.eval(m.group(3))
            arr[self._index(rows), self._index(cols)] = value
            self.mpc[m.group(1)] = arr
        elif re.fullmatch(r"mpc\.\w+", lhs):
            self.mpc[lhs[4:]] = value
        elif re.fullmatch(r"[A-Za-z_]\w*", lhs):
            self.vars[lhs] = value
        else:
            raise CaseError(f"{self.where}: cannot assign to {lhs!r}")


def read_mpc(path: str | Path) -> dict[str, Any]:
    """The `mpc` struct of a MATPOWER file as a dict of numpy arrays and scalars."""
    p = Path(path)
    text = read_text(p, CaseError)
    mpc: dict[str, Any] = {}
    ev = None
    for no, st in _statements(text):
        where = f"{p.name}:{no}"
        if re.match(r"^function\b", st):
            continue
        if re.fullmatch(r"define_constants", st) or re.fullmatch(
                r"\[[\w\s,]+\]\s*=\s*idx_(bus|brch|gen|cost)", st):
            continue  # MATPOWER's column names, which the evaluator knows
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*\[(.*)\]", st, re.S)
        if m:
            mpc[m.group(1)] = _matrix(m.group(2), where)
            continue
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*'([^']*)'", st)
        if m:
            mpc[m.group(1)] = m.group(2)
            continue
        if "=" not in st:
            raise CaseError(f"{where}: unsupported statement {st!r}")
        lhs, rhs = (s.strip() for s in st.split("=", 1))
        ev = ev or _Evaluator(mpc, where)
        ev.where = where
        ev.assign(lhs, rhs)
    for need in ("baseMVA", "bus", "branch"):
        if need not in mpc:
            raise CaseError(f"{p}: mpc.{need} is missing")
    return mpc


def case_from_mpc(mpc: dict[str, Any], name: str) -> Case:
    """Build a `Case` from a MATPOWER struct (distribution cases: one or more REF buses,
    PQ loads; generators at PQ buses are taken as negative load)."""
    bus = np.atleast_2d(np.asarray(mpc["bus"], float))
    br = np.atleast_2d(np.asarray(mpc["branch"], float))
    if bus.shape[1] <= VMIN or br.shape[1] <= BR_STATUS:
        raise CaseError(f"{name}: bus needs 13 columns and branch 11 (got {bus.shape[1]}, "
                        f"{br.shape[1]})")
    base = float(mpc["baseMVA"])
    ids = bus[:, BUS_I].astype(np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise CaseError(f"{name}: duplicate bus numbers")
    pos = {int(b): i for i, b in enumerate(ids)}
    try:
        f = np.array([pos[int(b)] for b in br[:, F_BUS]], dtype=np.int64)
        t = np.array([pos[int(b)] for b in br[:, T_BUS]], dtype=np.int64)
    except KeyError as e:
        raise CaseError(f"{name}: a branch names bus {e.args[0]}, which is not in mpc.bus") from None
    if np.any((br[:, TAP] != 0) & (br[:, TAP] != 1)):
        raise CaseError(f"{name}: transformers with taps are not supported")
    slack = np.flatnonzero(bus[:, BUS_TYPE] == REF)
    p = bus[:, PD] / base
    q = bus[:, QD] / base
    vm = bus[:, VM].copy()
    if "gen" in mpc and np.size(mpc["gen"]):
        gen = np.atleast_2d(np.asarray(mpc["gen"], float))
        for g in gen:
            if g[GEN_STATUS] <= 0:
                continue
            i = pos.get(int(g[GEN_BUS]))
            if i is None:
                raise CaseError(f"{name}: a generator names bus {int(g[GEN_BUS])}, which is not in mpc.bus")
            if bus[i, BUS_TYPE] == REF:
                vm[i] = g[VG]
            else:
                p[i] -= g[PG] / base
                q[i] -= g[QG] / base
    vmin = np.where(bus[:, VMIN] > 0, bus[:, VMIN], 0.9)
    vmax = np.where(bus[:, VMAX] > 0, bus[:, VMAX], 1.1)
    return Case(
        name=name, base_mva=base, base_kv=float(bus[0, BASE_KV]), bus_ids=ids, slack=slack,
        v_slack=vm[slack], p_load=p, q_load=q, f=f, t=t, r=br[:, BR_R].copy(), x=br[:, BR_X].copy(),
        closed=br[:, BR_STATUS] != 0, switchable=np.ones(len(br), dtype=bool), vmin=vmin, vmax=vmax,
    ).validate()


def load_matpower(path: str | Path) -> Case:
    p = Path(path)
    return case_from_mpc(read_mpc(p), p.stem)
