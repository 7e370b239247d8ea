*** Settings ***
Documentation     A hot converter derates its current limit along its curve (the node's own
...               decision, from what it measures) and gets it back when it cools.
Resource          powerflow.resource
Suite Setup       Start Rack
Suite Teardown    Stop Rack

*** Test Cases ***
A Hot Converter Derates And Recovers
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s
    Node Field Should Be Within    2    iout_limit    49.9    50.1    5s
    Inject Fault    sensor-stuck    node=2    sensor=temp1    value=90
    Node Field Should Be Within    2    iout_limit    1    49    5s
    Node Should Be In Mode Within    2    cv    2s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s
    Inject Fault    sensor-clear    node=2    sensor=temp1
    Node Field Should Be Within    2    iout_limit    49.9    50.1    10s
