*** Settings ***
Documentation     The operator's hand: paused, the loop leaves setpoints to commands, which the
...               node confirms; a policy change shows in the plan; resumed, the loop takes over.
Resource          powerflow.resource
Suite Setup       Start Rack
Suite Teardown    Stop Rack

*** Test Cases ***
A Command While Paused Is Confirmed By The Node
    Bus Voltage Should Be Within    ${BUS_LOW}    ${BUS_HIGH}    15s
    Pause Control
    ${ack}=    Write Command To Node    4    vout=12.1
    Node Field Should Be Within    4    vout_command    12.05    12.15    5s
    Resume Control

A Command While The Loop Runs Is Refused
    Run Keyword And Expect Error    *pause*    Write Command To Node    4    vout=12.1

A Policy Change Shows In The Plan
    Set Policy    power_saving=false
    Plan Should Say    "on": true, "vref": [0-9.]+, "share_w": [0-9.]+, "plan_limit_w": [0-9.]+    10s
