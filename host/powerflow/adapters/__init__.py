"""The `RackIO`s (control/rackio.py): how the control loop reaches a rack. `boards`: the
live rack through the node manager (real boards, or the full-process emulated rack) and
the device sources in `devices`; `fast`: the fast-mode rack of the scenario runner."""
