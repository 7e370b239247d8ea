*** Settings ***
Documentation     A converter that fails is found out by what it measures (no current), taken
...               out of the plan with an alarm, and the others re-share its load in band.
Resource          powerflow.resource
Suite Setup       Start Rack
Suite Teardown    Stop Rack

*** Test Cases ***
Converter Failure Is Re-Shared
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s
    Inject Fault    converter-failure    node=3
    Plan Should Say    "3": \\{"on": false    15s
    Alarm Should Be Active    node_excluded    10s
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    10s
