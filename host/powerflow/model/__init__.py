"""The rack as data: its description (`rack`) and the mesh primitives (`mesh`) that the
allocator's network, the emulator's physics, the rack case and the API share. Pure: it
imports nothing of PowerFlow outside itself but the TOML reader."""
