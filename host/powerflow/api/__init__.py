"""The host's HTTP API: the CLI and rack-management software talk to the host through it."""
