#!/usr/bin/env python3
"""Build a small MaxMind DB (GeoIP) file from a JSON description.

Used by the tests and to make the example `enrichment/geoip/data.mmdb`, so
no downloaded database is ever needed. Needs the `mmdb-writer` package
(`pip install mmdb-writer`).

    build_mmdb.py NETWORKS.json OUT.mmdb

NETWORKS.json is an object: {"database_type": "...", "networks":
{"CIDR": record, ...}}. Records are JSON objects; integers become uint32
(or int32 when negative) and floats doubles, as in MaxMind's own databases.
Networks are inserted from the widest to the narrowest prefix, so a nested
network overrides its parent for the addresses it covers.
"""

import ipaddress
import json
import sys

from mmdb_writer import MMDBWriter, MmdbF64, MmdbI32, MmdbU32
from netaddr import IPSet


def typed(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return MmdbI32(value) if value < 0 else MmdbU32(value)
    if isinstance(value, float):
        return MmdbF64(value)
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    raise TypeError(f"unsupported value {value!r}")


def main(source, out):
    with open(source) as f:
        spec = json.load(f)
    networks = spec["networks"]
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=spec.get("database_type", "Ravenwatch-Test"),
        description={"en": spec.get("description", "built by scripts/build_mmdb.py")},
    )
    for cidr in sorted(networks, key=lambda c: ipaddress.ip_network(c).prefixlen):
        writer.insert_network(IPSet([cidr]), typed(networks[cidr]))
    writer.to_db_file(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
