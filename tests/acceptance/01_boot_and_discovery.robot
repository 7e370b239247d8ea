*** Settings ***
Documentation     Every node boots, is discovered by the host with its firmware version, reports
...               telemetry, and the rack comes up to its bus voltage (soft start included).
Resource          powerflow.resource
Suite Setup       Start Rack
Suite Teardown    Stop Rack

*** Test Cases ***
Every Node Is Online With Its Firmware
    FOR    ${node}    IN RANGE    1    5
        Node State Should Become    ${node}    online    10s
        Wait For Frame On Node    ${node}    event    10s    pattern=firmware \\d+\\.\\d+\\.\\d+    from_start=true
    END

Every Node Reports Telemetry
    FOR    ${node}    IN RANGE    1    5
        Node Should Report Telemetry Within    ${node}    2s
    END

The Rack Soft-Starts To Its Bus Voltage
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s
    FOR    ${node}    IN RANGE    1    5
        Node Field Should Be Within    ${node}    vout    11.5    12.8    15s
    END
