*** Settings ***
Documentation     Keyed nodes: the host opens an authenticated session with each (HMAC-SHA256 on
...               every frame) and the rack runs; a setpoint slipped onto a node's serial line
...               under a key that is not the node's is refused and changes nothing.
Resource          powerflow.resource
Suite Setup       Start Rack    ${CURDIR}/keyed-rack.toml
Suite Teardown    Stop Rack

*** Test Cases ***
Keyed Sessions Come Up
    FOR    ${node}    IN RANGE    1    5
        Node State Should Become    ${node}    online    10s
        Node Should Report Telemetry Within    ${node}    2s
    END
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s

A Forged Command Is Refused
    ${rejects}=    Forged Command Should Be Refused By Node    1
    Should Be True    ${rejects} >= 1
    Forged Command Should Be Refused By Node    2
    Node Should Report Telemetry Within    1    2s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    5s
