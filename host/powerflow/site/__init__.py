"""The site tier: many racks under one power tree, coordinated over an MQTT broker.

allocate (pure budgets down the tree), messages (topics and CBOR payloads, protocol/SITE.md),
broker (a Mosquitto with authentication and ACLs), agent (a rack's side), controller (the
site controller, active or standby), standin (a rack stand-in with a demand trace).
"""
