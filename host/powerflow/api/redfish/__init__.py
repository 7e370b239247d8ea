"""A Redfish service for the rack (DMTF DSP0266), for rack-management software that speaks it.

    /redfish/v1/                         ServiceRoot
    /redfish/v1/$metadata, /odata        the CSDL references and the OData service document
    /redfish/v1/SessionService[/Sessions]  sessions (POST gives X-Auth-Token); basic auth too
                                         (`sessions.py`)
    /redfish/v1/Chassis/Rack             the rack: PowerSubsystem (capacity, allocation,
                                         redundancy), PowerSupplies (one DC regulator per
                                         converter node, with EfficiencyRatings and Metrics),
                                         Sensors (with Thresholds), Controls, legacy Power
    /redfish/v1/Chassis/<device>         each device: EnvironmentMetrics (PowerWatts,
                                         PowerLimitWatts) and its PowerLimit Control
                                         (`chassis.py`)
    /redfish/v1/PowerEquipment/ElectricalBuses/<segment>   the mesh: each bus segment a
                                         PowerDistribution (Bus), its converters as Mains
                                         circuits and its ties as Branch circuits (`mesh.py`)

Everything is read from and written through the app's `HostService`. Writes (PATCH of a
converter's output or a device's power limit) go through the allocator's policy checks; a
refused change answers with a Redfish error message and changes nothing. Credentials are the
API's tokens: user = token name, password = its secret (without a tokens file, anyone local).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from powerflow.api.deps import service
from powerflow.api.redfish import chassis, mesh, sessions
from powerflow.api.redfish.common import HEADERS, SCHEMAS, V1, RedfishError, ok, otype, ref
from powerflow.service import HostService

root = APIRouter(include_in_schema=False)  # open: the service root and metadata


def install(app: FastAPI) -> None:
    """Serve the Redfish tree from `app` (whose state holds the service and the access gate)."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RedfishError)
        return exc.response

    app.add_exception_handler(RedfishError, handler)
    for r in (root, sessions.open_router, sessions.router, chassis.writes, chassis.router,
              mesh.router):
        app.include_router(r)


def metadata_xml() -> str:
    refs = []
    for ns, v in SCHEMAS.items():
        inc = f'<edmx:Include Namespace="{ns}"/>' + (f'<edmx:Include Namespace="{ns}.{v}"/>'
                                                     if v else "")
        refs.append(f'<edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/{ns}_v1.xml">'
                    f"{inc}</edmx:Reference>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
            + "".join(refs) +
            '<edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" '
            'Namespace="Service"><EntityContainer Name="Service" '
            f'Extends="ServiceRoot.{SCHEMAS["ServiceRoot"]}.ServiceContainer"/></Schema>'
            "</edmx:DataServices></edmx:Edmx>")


@root.get("/redfish")
def versions() -> JSONResponse:
    return ok({"v1": V1 + "/"})


@root.get(V1)
@root.get(V1 + "/")
def service_root(svc: HostService = Depends(service)) -> JSONResponse:
    name = svc.rack.name
    return ok({"@odata.id": V1 + "/", "@odata.type": otype("ServiceRoot"), "Id": "RootService",
               "Name": f"PowerFlow rack {name}", "RedfishVersion": "1.20.0",
               "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"powerflow:rack:{name}")),
               "Chassis": ref(V1 + "/Chassis"), "SessionService": ref(V1 + "/SessionService"),
               "PowerEquipment": ref(V1 + "/PowerEquipment"),
               "Links": {"Sessions": ref(V1 + "/SessionService/Sessions")}})


@root.get(V1 + "/$metadata")
def metadata() -> Response:
    return Response(metadata_xml(), media_type="application/xml", headers=HEADERS)


@root.get(V1 + "/odata")
def odata() -> JSONResponse:
    return ok({"@odata.context": V1 + "/$metadata", "value": [
        {"name": "Service", "kind": "Singleton", "url": V1 + "/"},
        {"name": "Chassis", "kind": "Singleton", "url": V1 + "/Chassis"},
        {"name": "SessionService", "kind": "Singleton", "url": V1 + "/SessionService"},
        {"name": "PowerEquipment", "kind": "Singleton", "url": V1 + "/PowerEquipment"}]})
