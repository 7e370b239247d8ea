"""The host's link to converter nodes: byte transports and per-node protocol sessions."""
