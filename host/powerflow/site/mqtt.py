"""Connecting to the site's broker: MQTT 5 with aiomqtt, credentials, TLS and a will.

`BrokerAddress.parse("mqtt://HOST:PORT")` (or `mqtts://` for TLS, with `ca` the CA file to
trust); the password is read from a file so it never shows in a process list. Keepalive is
short (2 s) so the broker sends a client's will within ~3 s of it stopping.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

KEEPALIVE_S = 2
PENDING_WARN = 100_000  # QoS 1 publishes awaiting their PUBACK before aiomqtt warns


class AddressError(ValueError):
    pass


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    user: str | None = None
    password: str | None = None
    ca: str | None = None

    @staticmethod
    def parse(url: str, user: str | None = None, password_file: str | None = None,
              ca: str | None = None) -> BrokerAddress:
        u = urlsplit(url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise AddressError(f"{url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
        try:
            port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        except ValueError:
            raise AddressError(f"{url!r}: the port is not a number from 1 to 65535") from None
        password = None
        if password_file is not None:
            try:
                password = Path(password_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise AddressError(f"{password_file}: cannot read the password: {e}") from None
            if not password:
                raise AddressError(f"{password_file}: the password file is empty")
        if ca is not None and not Path(ca).is_file():
            raise AddressError(f"{ca}: no such CA file")
        return BrokerAddress(u.hostname, port, u.scheme == "mqtts" or ca is not None, user,
                             password, ca)

    def client(self, client_id: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        tls = None
        if self.tls:
            tls = ssl.create_default_context(cafile=self.ca)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # nothing queued for a client that is away
        c = aiomqtt.Client(self.host, self.port, identifier=client_id, username=self.user,
                           password=self.password, protocol=aiomqtt.ProtocolVersion.V5,
                           will=will, keepalive=KEEPALIVE_S, tls_context=tls,
                           clean_start=True, properties=props, timeout=5)
        # a site controller publishes a period's budgets at once, one per rack: that many
        # PUBACKs outstanding is the design, not a backlog worth a warning line each
        c.pending_calls_threshold = PENDING_WARN
        return c
