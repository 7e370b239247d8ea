"""Cases to and from pandapower networks.

`from_pandapower` reads a net as the engine models it: lines (with their charging),
two-winding transformers (impedance, magnetising branch, ratio and tap position, by
pandapower's own formulas: the T model turned into a pi), line and transformer switches
(a line or transformer with a switch is switchable; opening one of them opens it), closed
bus-bus switches (their buses merged), several external grids (each a substation: the
feeds), loads, static generators (negative loads: DG and reverse flows), storage and shunts.
Bus numbers are pandapower's bus indices (a merged group by its smallest); `labels` name
each branch's element (`line 12`, `trafo 0`). What the engine does not model is refused
naming the element and its index: nothing is guessed.

Phase shifts of transformers are left out: in a radial network each component is fed by
one substation, so a shift turns every angle below it by the same amount and changes no
magnitude, flow or loss (a configuration that closes a loop is solved by Newton without
them: the magnitudes there are approximate, and reconfiguration never keeps such a one).

`write_net` gives the net back with the switches of a configuration; `to_pandapower` turns a
plain case into a net, for the tests' independent solver.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from powerflow.grid.case import Case, CaseError
from powerflow.model.mesh import DisjointSets

# elements the engine does not model: refused when the net has one in service
UNMODELLED = {"trafo3w": "three-winding transformers", "impedance": "impedance elements",
              "dcline": "DC lines", "ward": "ward equivalents", "xward": "extended wards",
              "gen": "voltage-controlled generators (PV buses)", "tcsc": "TCSC elements",
              "svc": "SVC elements", "ssc": "SSC elements", "vsc": "VSC converters",
              "line_dc": "DC lines", "motor": "motors", "asymmetric_load": "asymmetric loads",
              "asymmetric_sgen": "asymmetric static generators"}
FREQ_HZ = 50.0  # pandapower's default when the net does not say


@dataclass(frozen=True)
class NetMap:
    """Where a case's branches come from: (element, index) per branch, and each switchable
    branch's switches (pandapower switch indices)."""

    elements: tuple[tuple[str, int], ...]
    switches: tuple[tuple[int, ...], ...]
    bus_node: dict[int, int] = field(default_factory=dict)  # pandapower bus -> case bus index

    def lines(self, branches: list[int] | tuple[int, ...]) -> list[int]:
        """The pandapower line indices of these branches (transformers left out)."""
        return sorted(self.elements[b][1] for b in branches if self.elements[b][0] == "line")


def _in_service(df: Any) -> Any:
    return df[df.in_service] if "in_service" in df else df


def _check_supported(net: Any, name: str) -> None:
    for key, what in UNMODELLED.items():
        df = getattr(net, key, None)
        if df is not None and len(df) and len(_in_service(df)):
            idx = int(_in_service(df).index[0])
            raise CaseError(f"{name}: {key} {idx}: {what} are not modelled by the engine "
                            "(take them out of service or out of the net)")


def from_pandapower(net: Any, name: str = "pandapower") -> tuple[Case, NetMap]:
    """The case of a pandapower net and where its branches come from (see the module)."""
    _check_supported(net, name)
    sn = float(net.sn_mva)
    f_hz = float(getattr(net, "f_hz", FREQ_HZ) or FREQ_HZ)
    bus = net.bus[net.bus.in_service]
    if not len(bus):
        raise CaseError(f"{name}: no bus in service")
    ids = [int(b) for b in bus.index]
    known = set(ids)
    vn = {int(b): float(v) for b, v in zip(bus.index, bus.vn_kv, strict=True)}
    sw = net.switch if len(net.switch) else None
    # closed bus-bus switches merge their buses
    sets = DisjointSets(len(ids))
    at = {b: i for i, b in enumerate(ids)}
    line_sw: dict[int, list[int]] = {}
    trafo_sw: dict[int, list[int]] = {}
    if sw is not None:
        for k, s in sw.iterrows():
            k = int(k)
            b = int(s.bus)
            if b not in known:
                raise CaseError(f"{name}: switch {k}: bus {b} is not a bus in service")
            el = int(s.element)
            if s.et == "b":
                if el not in known:
                    raise CaseError(f"{name}: switch {k}: bus {el} is not a bus in service")
                if not bool(s.closed):
                    raise CaseError(f"{name}: switch {k}: an open bus-bus switch (buses {b} and "
                                    f"{el}) is not modelled; close it or remove it")
                if vn[b] != vn[el]:
                    raise CaseError(f"{name}: switch {k}: joins buses at {vn[b]:g} and "
                                    f"{vn[el]:g} kV")
                sets.union(at[b], at[el])
            elif s.et == "l":
                if el not in net.line.index:
                    raise CaseError(f"{name}: switch {k}: line {el} does not exist")
                ln = net.line.loc[el]
                if b not in (int(ln.from_bus), int(ln.to_bus)):
                    raise CaseError(f"{name}: switch {k}: bus {b} is not an end of line {el}")
                line_sw.setdefault(el, []).append(k)
            elif s.et == "t":
                if el not in net.trafo.index:
                    raise CaseError(f"{name}: switch {k}: trafo {el} does not exist")
                tr = net.trafo.loc[el]
                if b not in (int(tr.hv_bus), int(tr.lv_bus)):
                    raise CaseError(f"{name}: switch {k}: bus {b} is not an end of trafo {el}")
                trafo_sw.setdefault(el, []).append(k)
            else:
                raise CaseError(f"{name}: switch {k}: element type {s.et!r} is not modelled "
                                "(b, l or t)")
    root_of = [sets.find(i) for i in range(len(ids))]
    groups = sorted({r for r in root_of})
    node_of_root = {r: k for k, r in enumerate(groups)}
    node = {b: node_of_root[root_of[at[b]]] for b in ids}  # pandapower bus -> case bus
    rep = [min(b for b in ids if node[b] == k) for k in range(len(groups))]
    n = len(groups)
    base_kv = np.array([vn[b] for b in rep])

    p = np.zeros(n)
    q = np.zeros(n)
    for _kind, _idx, i, pe, qe in _injections(net, node, sn):
        p[i] += pe
        q[i] += qe
    y_bus = np.zeros(n, complex)
    if len(getattr(net, "shunt", [])):
        for k, e in _in_service(net.shunt).iterrows():
            if int(e.bus) in known:
                # pandapower: p_mw, q_mvar drawn at v = vn_kv (q > 0 inductive), times step
                y_bus[node[int(e.bus)]] += (float(e.p_mw) - 1j * float(e.q_mvar)) * float(
                    e.get("step", 1)) / sn * (float(e.vn_kv) / vn[int(e.bus)]) ** -2

    f, t, r, x, tap, yf, yt, closed, switchable, keep, elements, switches = (
        [], [], [], [], [], [], [], [], [], [], [], [])
    for k, ln in net.line.iterrows():
        k = int(k)
        a, b = int(ln.from_bus), int(ln.to_bus)
        if a not in known or b not in known:
            continue
        if not bool(ln.in_service) and sw is not None:
            continue  # out of service in a net with switches: not there
        if vn[a] != vn[b]:
            raise CaseError(f"{name}: line {k}: joins buses {a} ({vn[a]:g} kV) and {b} "
                            f"({vn[b]:g} kV); a transformer belongs there")
        if node[a] == node[b]:
            raise CaseError(f"{name}: line {k}: both ends are one bus (bus-bus switches "
                            "merge them)")
        zbase = vn[a] ** 2 / sn
        length = float(ln.length_km) / float(ln.parallel)
        par = float(ln.parallel)
        bc = 2 * np.pi * f_hz * float(ln.c_nf_per_km) * 1e-9 * float(ln.length_km) * par * zbase
        gc = float(ln.get("g_us_per_km", 0.0)) * 1e-6 * float(ln.length_km) * par * zbase
        ysh = (gc + 1j * bc) / 2
        f.append(node[a])
        t.append(node[b])
        r.append(float(ln.r_ohm_per_km) * length / zbase)
        x.append(float(ln.x_ohm_per_km) * length / zbase)
        tap.append(1.0)
        yf.append(ysh)  # half the charging at each end (B > 0: capacitive)
        yt.append(ysh)
        mine = line_sw.get(k, [])
        if sw is not None:
            closed.append(bool(ln.in_service) and all(bool(sw.loc[s].closed) for s in mine))
            switchable.append(bool(mine))
            # opened at one end only, it stays connected at the other (pandapower models the
            # open switch as that end's disconnection): a line switched at one end only, or
            # one the net has open at one end and closed at the other
            open_ends = {int(sw.loc[s].bus) for s in mine
                         if not bool(sw.loc[s].closed)} or {int(sw.loc[s].bus) for s in mine}
            keep.append(node[b] if open_ends == {a} else node[a] if open_ends == {b} else -1)
        else:  # a net without switches (as pandapower's case33bw): ties are out of service
            closed.append(bool(ln.in_service))
            switchable.append(True)
            keep.append(-1)
        elements.append(("line", k))
        switches.append(tuple(mine))
    for k, tr in _in_service(net.trafo).iterrows():
        k = int(k)
        hv, lv = int(tr.hv_bus), int(tr.lv_bus)
        if hv not in known or lv not in known:
            continue
        rr, xx, g, bm, ratio = _trafo_pi(tr, vn[hv], vn[lv], sn, name, k)
        # T model -> pi (pandapower's _wye_delta, half the leakage on each side)
        za = rr * 0.5 + 1j * xx * 0.5
        zb = za
        ym = g + 1j * bm
        if ym != 0:
            zc = 1 / ym
            zsum = za * zb + za * zc + zb * zc
            zser, y_hv, y_lv = zsum / zc, zb / zsum, za / zsum
        else:
            zser, y_hv, y_lv = za + zb, 0j, 0j
        mine = trafo_sw.get(k, [])
        f.append(node[hv])
        t.append(node[lv])
        r.append(zser.real)
        x.append(zser.imag)
        tap.append(ratio)
        yf.append(complex(y_hv))  # the magnetising branch split to both ends
        yt.append(complex(y_lv))
        closed.append(all(bool(sw.loc[s].closed) for s in mine) if sw is not None else True)
        switchable.append(bool(mine))
        keep.append(-1)
        elements.append(("trafo", k))
        switches.append(tuple(mine))

    eg = _in_service(net.ext_grid)
    eg = eg[eg.bus.isin(list(known))]
    if len(eg) == 0:
        raise CaseError(f"{name}: no external grid in service (a substation to feed it)")
    slack = np.array(sorted({node[int(b)] for b in eg.bus}), np.int64)
    v_slack = np.array([float(eg[eg.bus.map(lambda b: node[int(b)]) == s].vm_pu.iloc[0])
                        for s in slack])
    vmin = np.full(n, 0.9)
    vmax = np.full(n, 1.1)
    if "min_vm_pu" in net.bus:
        lo = {node[int(b)]: float(v) for b, v in zip(bus.index, bus.min_vm_pu, strict=True)
              if v == v}
        for i, v in lo.items():
            vmin[i] = v
    if "max_vm_pu" in net.bus:
        for b, v in zip(bus.index, bus.max_vm_pu, strict=True):
            if v == v:
                vmax[node[int(b)]] = float(v)
    levels, counts = np.unique(base_kv, return_counts=True)
    case = Case(
        name=name, base_mva=sn, base_kv=float(levels[counts.argmax()]),  # the most buses' level
        bus_ids=np.array(rep, np.int64), slack=slack, v_slack=v_slack, p_load=p, q_load=q,
        f=np.array(f, np.int64), t=np.array(t, np.int64), r=np.array(r), x=np.array(x),
        closed=np.array(closed, bool), switchable=np.array(switchable, bool), vmin=vmin,
        vmax=vmax, tap=np.array(tap), y_from=np.array(yf, complex), y_to=np.array(yt, complex),
        y_bus=y_bus, keep_end=np.array(keep, np.int64),
        labels=tuple(f"{e} {i}" for e, i in elements)).validate()
    _check_fed(case, name)
    return case, NetMap(tuple(elements), tuple(switches), node)


def _injections(net: Any, node: dict[int, int], sn: float
                ) -> list[tuple[str, int, int, float, float]]:
    """Every load, storage and static generator on an energised bus: (element, index, case
    bus, P, Q) in p.u., consumption-positive (a generator negative), scaling applied."""
    out = []
    for key, sign in (("load", 1.0), ("storage", 1.0), ("sgen", -1.0)):
        df = getattr(net, key, None)
        if df is None or not len(df):
            continue
        for k, e in _in_service(df).iterrows():
            if int(e.bus) not in node:
                continue  # on a bus out of service: not energised
            scale = float(e.get("scaling", 1.0))
            out.append((key, int(k), node[int(e.bus)], sign * float(e.p_mw) * scale / sn,
                        sign * float(e.get("q_mvar", 0.0)) * scale / sn))
    return out


def net_injections(net: Any, nmap: NetMap, sn: float
                   ) -> list[tuple[str, int, int, float, float]]:
    """`_injections` of a net already read (for profiles that scale its elements)."""
    return _injections(net, nmap.bus_node, sn)


def _trafo_pi(tr: Any, vn_hv_bus: float, vn_lv_bus: float, sn: float, name: str, k: int
              ) -> tuple[float, float, float, float, float]:
    """A two-winding transformer's series r, x, magnetising g, b (T model, p.u. on the
    lv bus) and its off-nominal ratio at the hv side, by pandapower's formulas."""
    def val(key: str, default: Any = None) -> Any:
        v = tr.get(key, default)
        return default if v is None or (isinstance(v, float) and v != v) else v

    if bool(val("tap_dependency_table", False)):
        raise CaseError(f"{name}: trafo {k}: tap-dependent impedance tables are not modelled")
    vn_hv, vn_lv = float(tr.vn_hv_kv), float(tr.vn_lv_kv)
    pos = val("tap_pos")
    if pos is not None:
        kind = val("tap_changer_type", "Ratio")
        if kind not in ("Ratio",) or val("tap_step_degree", 0.0):
            raise CaseError(f"{name}: trafo {k}: a {kind} tap changer is not modelled "
                            "(ratio tap changers only)")
        du = float(val("tap_step_percent", 0.0)) / 100 * (float(pos) - float(val("tap_neutral",
                                                                                   0.0)))
        side = val("tap_side", "hv")
        if side == "hv":
            vn_hv *= 1 + du
        elif side == "lv":
            vn_lv *= 1 + du
        else:
            raise CaseError(f"{name}: trafo {k}: tap_side {side!r} (hv or lv)")
    ratio = (vn_hv / vn_lv) / (vn_hv_bus / vn_lv_bus)
    sn_t = float(tr.sn_mva)
    par = float(val("parallel", 1))
    tap_lv = (vn_lv / vn_lv_bus) ** 2 * sn
    z_sc = float(tr.vk_percent) / 100 / sn_t * tap_lv
    r_sc = float(tr.vkr_percent) / 100 / sn_t * tap_lv
    x_sc = np.sign(z_sc) * np.sqrt(z_sc ** 2 - r_sc ** 2)
    base_z = vn_lv_bus ** 2 / sn
    pfe = float(val("pfe_kw", 0.0)) * 1e-3
    ym = float(val("i0_percent", 0.0)) / 100 * sn_t
    b_mva = -np.sqrt(max(ym ** 2 - pfe ** 2, 0.0))
    scale = base_z * par / float(tr.vn_lv_kv) ** 2 / (vn_lv / float(tr.vn_lv_kv)) ** 2
    # the magnetising admittance G + jB: iron losses, and B < 0 (inductive)
    return r_sc / par, x_sc / par, pfe * scale, b_mva * scale, ratio


def _check_fed(case: Case, name: str) -> None:
    """Every bus reaches a substation with every switch closed (else it can never be fed)."""
    sets = DisjointSets(case.n_bus)
    for a, b in zip(case.f, case.t, strict=True):
        sets.union(int(a), int(b))
    fed = {sets.find(int(s)) for s in case.slack}
    for i in range(case.n_bus):
        if sets.find(i) not in fed:
            raise CaseError(f"{name}: bus {int(case.bus_ids[i])} is connected to no external "
                            "grid even with every switch closed")


def load_net(spec: str) -> Any:
    """A pandapower net: `pandapower:NAME` (a function of `pandapower.networks`) or a
    pandapower JSON file."""
    import warnings

    import pandapower as pp

    if spec.startswith("pandapower:"):
        import pandapower.networks as pn

        fn = spec.split(":", 1)[1]
        maker = getattr(pn, fn, None)
        if not fn or fn.startswith("_") or not callable(maker):
            raise CaseError(f"{spec}: pandapower.networks has no network {fn!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return maker()
            except TypeError as e:
                raise CaseError(f"{spec}: {e}") from None
    p = Path(spec)
    if not p.is_file():
        raise CaseError(f"{spec}: no such file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pp.from_json(str(p))
        except Exception as e:  # pandapower raises anything on a file that is not a net
            raise CaseError(f"{spec}: not a pandapower JSON net ({type(e).__name__}: "
                            f"{str(e)[:200]})") from None


def write_net(net: Any, nmap: NetMap, case: Case, open_branches: tuple[int, ...] | list[int]
              ) -> Any:
    """A copy of `net` with the switches of a configuration: every switch of an open
    switchable branch open, every switch of a closed one closed (a net without switches:
    lines in or out of service)."""
    out = copy.deepcopy(net)
    opened = set(int(b) for b in open_branches)
    keep = case.keep_end if case.keep_end is not None else np.full(case.n_branch, -1)
    node = {int(b): k for k, b in enumerate(case.bus_ids)}
    for b, (kind, idx) in enumerate(nmap.elements):
        if not case.switchable[b]:
            continue
        if nmap.switches[b]:
            out.switch.loc[list(nmap.switches[b]), "closed"] = True
            if b in opened:  # kept at one end (see from_pandapower): the other end opens
                ends = [s for s in nmap.switches[b] if keep[b] < 0
                        or _case_bus(out, int(out.switch.loc[s].bus), case, node) != keep[b]]
                out.switch.loc[ends, "closed"] = False
        elif kind == "line":
            out.line.loc[idx, "in_service"] = b not in opened
    return out


def _case_bus(net: Any, bus: int, case: Case, node: dict[int, int]) -> int:
    """The case bus a pandapower bus is (merged groups are named by their smallest bus)."""
    if bus in node:
        return node[bus]
    # a bus merged into a group: find its group through the bus-bus switches
    seen, todo = {bus}, [bus]
    sw = net.switch[(net.switch.et == "b") & net.switch.closed]
    while todo:
        b = todo.pop()
        for a, e in zip(sw.bus, sw.element, strict=True):
            for u, w in ((int(a), int(e)), (int(e), int(a))):
                if u == b and w not in seen:
                    if w in node:
                        return node[w]
                    seen.add(w)
                    todo.append(w)
    return -1


def to_pandapower(case: Case) -> Any:
    """A pandapower net with the case's buses, loads, feeds and branches (open = out of
    service); a plain case only."""
    import pandapower as pp

    if not case.plain:
        raise CaseError(f"{case.name}: to_pandapower takes plain cases (no ratios, no shunts)")
    net = pp.create_empty_network(sn_mva=case.base_mva)
    zbase = case.base_kv ** 2 / case.base_mva
    for b in case.bus_ids:
        pp.create_bus(net, vn_kv=case.base_kv, name=str(int(b)))
    for s, v in zip(case.slack, case.v_slack, strict=True):
        pp.create_ext_grid(net, bus=int(s), vm_pu=float(v), va_degree=0.0)
    for i in np.flatnonzero((case.p_load != 0) | (case.q_load != 0)):
        pp.create_load(net, bus=int(i), p_mw=float(case.p_load[i] * case.base_mva),
                       q_mvar=float(case.q_load[i] * case.base_mva))
    for k in range(case.n_branch):
        pp.create_line_from_parameters(
            net, int(case.f[k]), int(case.t[k]), length_km=1.0, r_ohm_per_km=float(case.r[k] * zbase),
            x_ohm_per_km=float(case.x[k] * zbase), c_nf_per_km=0.0, max_i_ka=1e6,
            in_service=bool(case.closed[k]))
    return net
