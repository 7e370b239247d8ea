*** Settings ***
Documentation     A node whose host falls quiet goes to its failsafe and the rack stays in band;
...               when the link comes back the host takes the node over again.
Resource          powerflow.resource
Suite Setup       Start Rack
Suite Teardown    Stop Rack

*** Test Cases ***
Link Loss Then Failsafe Then Recovery
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s
    Cut Link    2
    Node State Should Become    2    lost    10s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s
    Sleep    3s    reason=the outage lasts past the node's 2 s failsafe timer (host and node time it alike)
    Restore Link    2
    Node State Should Become    2    online    20s
    Node Should Be In Failsafe Within    2    10s
    Node Should Report Telemetry Within    2    2s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s
