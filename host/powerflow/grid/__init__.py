"""Power-flow engine: case data, load flow, reconfiguration, flexible-bus optimisation."""
