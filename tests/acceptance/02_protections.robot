*** Settings ***
Documentation     A protection trips on what the node measures and stays latched until the host
...               clears it; the rest of the rack carries the load meanwhile.
Resource          powerflow.resource
Suite Setup       Start Rack
Suite Teardown    Stop Rack

*** Test Cases ***
Over-Temperature Trips And Latches
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s
    Inject Fault    sensor-stuck    node=1    sensor=temp1    value=120
    Node Should Be In Mode Within    1    fault    5s
    Wait For Frame On Node    1    event    5s    pattern=fault
    Inject Fault    sensor-clear    node=1    sensor=temp1
    Sleep    2s    reason=a latched fault must not clear itself when the cause goes
    Node Should Be In Mode Within    1    fault    1s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s

Clearing The Fault Re-Admits The Node
    Clear Faults On Node    1
    Node Field Should Be Within    1    faults    0    0    5s
    Node Field Should Be Within    1    vout    11.5    12.8    15s

Over-Voltage Trips And Latches
    Inject Fault    sensor-stuck    node=2    sensor=vout    value=15.5
    Node Should Be In Mode Within    2    fault    5s
    Node Field Should Be Within    2    faults    1    255    2s
    Inject Fault    sensor-clear    node=2    sensor=vout
    Sleep    2s    reason=still latched once the reading is back
    Node Should Be In Mode Within    2    fault    1s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s
    # the latched node refuses every lease renewal: the host records it once
    Events On Node Should Number At Most    2    setpoint refused    1
    Clear Faults On Node    2
    Node Field Should Be Within    2    faults    0    0    5s

Over-Current Trips
    Inject Fault    sensor-stuck    node=3    sensor=iout    value=70
    Node Should Be In Mode Within    3    fault    5s
    Inject Fault    sensor-clear    node=3    sensor=iout
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s
    Clear Faults On Node    3
    Node Field Should Be Within    3    faults    0    0    10s
