"""Security group rules compared whole: one rule is (protocol, from port, to port, source).

EC2 describes a group's rules as IpPermissions, each a protocol and port range with any
number of sources of four sorts: IPv4 ranges, IPv6 ranges, prefix lists and other groups.
`live_rules` splits them into one rule per source, each with the IpPermission that revokes
exactly that rule, so nothing a config doesn't name (an IPv6 range, a prefix list, a wider
port range, another protocol) escapes a comparison.
"""

from __future__ import annotations

from typing import NamedTuple

# EC2 accepts protocol numbers too; it describes the common ones by name.
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
ALL = "-1"
# (IpPermission field, the field inside each entry, the source prefix in a rule key)
SOURCES = (
    ("IpRanges", "CidrIp", "cidr"),
    ("Ipv6Ranges", "CidrIpv6", "cidr6"),
    ("PrefixListIds", "PrefixListId", "prefix-list"),
    ("UserIdGroupPairs", "GroupId", "group"),
)


class RuleKey(NamedTuple):
    protocol: str  # "tcp", "udp", "icmp", ..., or "-1" for all traffic
    from_port: int | None
    to_port: int | None
    source: str  # "cidr:0.0.0.0/0", "cidr6:::/0", "prefix-list:pl-1", "group:sg-1"


def tcp_key(port: int, source: str) -> RuleKey:
    return RuleKey("tcp", port, port, source)


def live_rules(permissions: list[dict]) -> dict[RuleKey, dict]:
    """Each rule of these IpPermissions, with the IpPermission that revokes only it."""
    rules: dict[RuleKey, dict] = {}
    for perm in permissions:
        protocol = str(perm.get("IpProtocol", ALL))
        protocol = PROTOCOL_NAMES.get(protocol, protocol)
        ports = (None, None) if protocol == ALL else (perm.get("FromPort"), perm.get("ToPort"))
        base = {"IpProtocol": perm.get("IpProtocol", ALL)}
        base.update({k: perm[k] for k in ("FromPort", "ToPort") if k in perm})
        for field, inner, sort in SOURCES:
            for entry in perm.get(field) or []:
                key = RuleKey(protocol, *ports, f"{sort}:{entry[inner]}")
                rules[key] = {**base, field: [{inner: entry[inner]}]}
    return rules


def label(key: RuleKey, names: dict[str, str] | None = None) -> str:
    """`tcp 5432 from 0.0.0.0/0`, `all traffic from pl-1`, `tcp 0-65535 from alb-sg`: group
    ids shown by the name the lab gives them (`names`: id -> name) where it has one."""
    sort, _, value = key.source.partition(":")
    source = (names or {}).get(value, value) if sort == "group" else value
    if key.protocol == ALL:
        return f"all traffic from {source}"
    ports = key.from_port if key.from_port == key.to_port else f"{key.from_port}-{key.to_port}"
    return f"{key.protocol} {ports} from {source}"
