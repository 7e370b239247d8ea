"""The site controller's read-only HTTP service: the tree as JSON, Prometheus metrics and a
dashboard page. It changes nothing (no write endpoints), so it needs no authentication;
it listens on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel

from powerflow.site.controller import SiteController


class SiteNode(BaseModel):
    id: str
    kind: str
    parent: str | None
    limit_w: float | None
    measured_w: float
    budget_w: float


class SiteRackState(BaseModel):
    id: str
    client: str
    parent: str
    online: bool
    floor_w: float
    feed_limit_w: float
    measured_w: float | None
    demand_p95_w: float | None
    budget_w: float | None
    committed_w: float
    reason: str | None
    acks_refused: dict[str, int]


class SiteState(BaseModel):
    site: str
    controller: str
    role: str
    epoch: int
    period_s: float
    periods: int
    lost_feeds: list[str]
    malformed: dict[str, int]
    nodes: list[SiteNode]
    racks: list[SiteRackState]


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>PowerFlow site</title>
<style>body{font:14px system-ui;margin:2em}td,th{padding:2px 10px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}.over{color:#b00}</style>
</head><body><h1 id="title">PowerFlow site</h1><p id="who"></p>
<table id="tree"><thead><tr><th>node</th><th>kind</th><th>limit W</th><th>measured W</th>
<th>budgets W</th></tr></thead><tbody></tbody></table><h2>Racks</h2>
<table id="racks"><thead><tr><th>rack</th><th>online</th><th>measured W</th><th>P95 W</th>
<th>budget W</th><th>floor W</th><th>reason</th></tr></thead><tbody></tbody></table>
<script>
function cell(r,v,c){const td=r.insertCell();td.textContent=v==null?"-":v;if(c)td.className=c}
async function tick(){const s=await (await fetch("api/v1/site")).json();
document.getElementById("title").textContent="PowerFlow site "+s.site;
document.getElementById("who").textContent=s.controller+" ("+s.role+", epoch "+s.epoch+")";
const depth={};const t=document.querySelector("#tree tbody");t.innerHTML="";
for(const n of s.nodes){depth[n.id]=n.parent?depth[n.parent]+1:0;if(n.kind=="rack")continue;
const r=t.insertRow();cell(r,"\\u00a0".repeat(4*depth[n.id])+n.id);cell(r,n.kind);
cell(r,n.limit_w);cell(r,n.measured_w,n.limit_w!=null&&n.measured_w>n.limit_w?"over":"");
cell(r,n.budget_w)}
const k=document.querySelector("#racks tbody");k.innerHTML="";for(const x of s.racks){
const r=k.insertRow();cell(r,x.id);cell(r,x.online?"yes":"no");cell(r,x.measured_w);
cell(r,x.demand_p95_w);cell(r,x.budget_w);cell(r,x.floor_w);cell(r,x.reason)}}
tick();setInterval(tick,2000);</script></body></html>"""


def metrics_text(st: dict[str, Any]) -> str:
    """Prometheus text exposition of the tree (W)."""
    out = ["# HELP powerflow_site_limit_watts Continuous limit of a feed or breaker (W).",
           "# TYPE powerflow_site_limit_watts gauge",
           "# HELP powerflow_site_measured_watts Power measured under a node (W).",
           "# TYPE powerflow_site_measured_watts gauge",
           "# HELP powerflow_site_budget_watts Budgets granted under a node (W).",
           "# TYPE powerflow_site_budget_watts gauge"]
    for n in st["nodes"]:
        lab = f'{{node="{n["id"]}",kind="{n["kind"]}"}}'
        if n["limit_w"] is not None:
            out.append(f"powerflow_site_limit_watts{lab} {n['limit_w']}")
        out.append(f"powerflow_site_measured_watts{lab} {n['measured_w']}")
        out.append(f"powerflow_site_budget_watts{lab} {n['budget_w']}")
    out += ["# HELP powerflow_site_epoch Epoch of this site controller.",
            "# TYPE powerflow_site_epoch gauge", f"powerflow_site_epoch {st['epoch']}",
            "# HELP powerflow_site_active 1 when this controller is the active one.",
            "# TYPE powerflow_site_active gauge",
            f"powerflow_site_active {1 if st['role'] == 'active' else 0}",
            "# HELP powerflow_site_periods_total Site periods allocated.",
            "# TYPE powerflow_site_periods_total counter",
            f"powerflow_site_periods_total {st['periods']}",
            "# HELP powerflow_site_messages_refused_total Messages refused, by reason.",
            "# TYPE powerflow_site_messages_refused_total counter"]
    for why, n in sorted(st["malformed"].items()):
        out.append(f'powerflow_site_messages_refused_total{{reason="{why}"}} {n}')
    return "\n".join(out) + "\n"


def create_site_app(ctrl: SiteController) -> FastAPI:
    app = FastAPI(title="PowerFlow site", version="1", docs_url=None, redoc_url=None)

    @app.get("/api/v1/site", response_model=SiteState)
    def site() -> dict[str, Any]:
        """The tree with its limits, measured power, budgets and each rack's reason (W)."""
        return ctrl.tree_state()

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return metrics_text(ctrl.tree_state())

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    return app
