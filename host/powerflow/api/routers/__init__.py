"""The native API's routers, one per resource: rack (reads), nodes (commands), control
(loop, allocation, plan, forecasts, policy), emulator and agents, stream (SSE and dashboard)."""
