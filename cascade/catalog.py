"""The catalog one upper platform gets: our system item, the shared organisation structure, the channels.

Order and shapes follow GB/T 28181 Annex J (the fact sheet's 3.4): the system item first (type 200, no
ParentID), then the shared nodes as administrative regions (their civil code, Name only), business groups
(215, ParentID = our system id) and virtual organisations (216, BusinessGroupID = the owning group,
ParentID only when the parent is a virtual organisation), parents before children; then the channels,
whose ParentID is the nearest shared node (or our system id).  A node the operator made (no code) is sent
as a virtual organisation with an id made from our domain, 216 and its node id.  Only shared things are
named, plus the ancestors of shared nodes as structure (so a shared virtual organisation has its business
group); a channel's ParentID is a node only when that node itself is shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from sip_server.gb.upper import CatalogEntry

from .registry_reads import ChannelFacts, OrgInfo
from .share import ShareMap

__all__ = ["SYSTEM_MANUFACTURER", "SYSTEM_MODEL", "build_entries", "channel_entry", "node_upward_id", "org_kind"]

SYSTEM_MANUFACTURER = "gbops"
SYSTEM_MODEL = "platform"
_ORG_KIND = {"civil": "region", "business_group": "business_group", "virtual_org": "virtual_org",
             "manual": "virtual_org"}


def _gb20(code: str | None, type_code: str) -> bool:
    return bool(code) and len(code) == 20 and code.isascii() and code.isdigit() and code[10:13] == type_code


def _civil(code: str | None) -> bool:
    return bool(code) and code.isascii() and code.isdigit() and len(code) in (2, 4, 6, 8)


def org_kind(node: OrgInfo) -> str:
    """The catalog kind of a node: region, business_group or virtual_org (operator-made nodes, and nodes
    whose code does not fit their kind, are virtual organisations)."""
    if node.kind == "civil" and _civil(node.code):
        return "region"
    if node.kind == "business_group" and _gb20(node.code, "215"):
        return "business_group"
    return "virtual_org"


def node_upward_id(node: OrgInfo, local_id: str) -> str:
    """The id an upper knows a node by: its own code when it fits its kind, else ``domain`` (the first
    10 digits of our id toward that upper) + 216 + the node id in 7 digits (deterministic)."""
    kind = org_kind(node)
    if kind == "region" or kind == "business_group":
        return node.code  # type: ignore[return-value]
    if node.kind == "virtual_org" and _gb20(node.code, "216"):
        return node.code  # type: ignore[return-value]
    return f"{local_id[:10]}216{node.id % 10_000_000:07d}"


def _ancestors(node_id: int | None, nodes: Mapping[int, OrgInfo]) -> Iterable[OrgInfo]:
    """The node itself, then its parent, ... (a cycle in stored data stops the walk)."""
    seen: set[int] = set()
    while node_id is not None and node_id in nodes and node_id not in seen:
        seen.add(node_id)
        node = nodes[node_id]
        yield node
        node_id = node.parent_id


def _civil_code_above(node_id: int | None, nodes: Mapping[int, OrgInfo]) -> str | None:
    for node in _ancestors(node_id, nodes):
        if org_kind(node) == "region":
            return node.code
    return None


def _group_of(node_id: int | None, nodes: Mapping[int, OrgInfo], shared: frozenset[int]) -> OrgInfo | None:
    """The nearest shared business group at or above ``node_id``."""
    for node in _ancestors(node_id, nodes):
        if node.id in shared and org_kind(node) == "business_group":
            return node
    return None


def system_entry(local_id: str, system_name: str) -> CatalogEntry:
    return CatalogEntry(device_id=local_id, name=system_name, kind="system", civil_code=local_id[:6],
                        manufacturer=SYSTEM_MANUFACTURER, model=SYSTEM_MODEL, address="", parental=1,
                        register_way=1, secrecy=0, status="ON")


def _org_entries(nodes: Mapping[int, OrgInfo], shared: frozenset[int], local_id: str) -> list[CatalogEntry]:
    present = sorted(n for n in shared if n in nodes)
    regions = sorted((nodes[n] for n in present if org_kind(nodes[n]) == "region"),
                     key=lambda n: (len(n.code or ""), n.code))
    groups = sorted((nodes[n] for n in present if org_kind(nodes[n]) == "business_group"), key=lambda n: n.code)
    out = [CatalogEntry(device_id=n.code or "", name=n.name, kind="region") for n in regions]
    for g in groups:
        out.append(CatalogEntry(device_id=node_upward_id(g, local_id), name=g.name, kind="business_group",
                                parent_id=local_id, civil_code=_civil_code_above(g.id, nodes) or local_id[:6]))
    # virtual organisations, parents before children
    vos = {n for n in present if org_kind(nodes[n]) == "virtual_org"}
    children: dict[int | None, list[int]] = {}
    for n in sorted(vos):
        parent = nodes[n].parent_id
        children.setdefault(parent if parent in vos else None, []).append(n)
    stack = list(reversed(children.get(None, [])))
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        node = nodes[n]
        parent = node.parent_id
        group = _group_of(parent, nodes, shared)
        out.append(CatalogEntry(
            device_id=node_upward_id(node, local_id), name=node.name, kind="virtual_org",
            parent_id=node_upward_id(nodes[parent], local_id) if parent in vos else None,
            business_group_id=node_upward_id(group, local_id) if group is not None else None))
        stack.extend(reversed(children.get(n, [])))
    return out


def structure(shared: frozenset[int], nodes: Mapping[int, OrgInfo]) -> frozenset[int]:
    """The shared nodes and their ancestors: an upper can only place a shared virtual organisation under its
    business group (and a region under its parent region) when those are in the catalog too. Ancestors add
    structure (names), never a channel."""
    out: set[int] = set()
    for n in shared:
        out.update(node.id for node in _ancestors(n, nodes))
    return frozenset(out | shared)


def channel_entry(facts: ChannelFacts, share: ShareMap, nodes: Mapping[int, OrgInfo], local_id: str,
                  org: frozenset[int] | None = None) -> CatalogEntry:
    """One shared channel's item (ids mapped, the share's overrides applied); ``org`` is
    :func:`structure` of the share when the caller has it."""
    shared = share.by_ref[facts.ref]
    node = nodes.get(facts.node_id) if facts.node_id is not None else None
    parent_id = local_id
    group_id = None
    if node is not None and node.id in share.org_nodes:
        parent_id = node_upward_id(node, local_id)
        group = _group_of(node.id, nodes, org if org is not None else structure(share.org_nodes, nodes))
        group_id = node_upward_id(group, local_id) if group is not None else None
    civil = (shared.civil_code or (facts.civil_code or "").strip() or _civil_code_above(facts.node_id, nodes)
             or local_id[:6])
    return CatalogEntry(
        device_id=shared.upward_id,
        name=shared.name or (facts.name or "").strip() or facts.ref.channel_id,
        kind="channel",
        parent_id=parent_id,
        business_group_id=group_id,
        civil_code=civil,
        manufacturer=facts.manufacturer,
        model=facts.model,
        address=facts.address,
        parental=0,
        register_way=1,
        secrecy=0,
        status="ON" if facts.online and facts.device_online else "OFF",
        longitude=facts.longitude,
        latitude=facts.latitude,
    )


def build_entries(share: ShareMap, nodes: Mapping[int, OrgInfo], *, local_id: str,
                  system_name: str) -> list[CatalogEntry]:
    """Every item of the catalog an upper gets, in the order it gets them."""
    out = [system_entry(local_id, system_name)]
    org = structure(share.org_nodes, nodes)
    out.extend(_org_entries(nodes, org, local_id))
    for ref in sorted(share.by_ref):
        facts = share.facts.get(ref)
        if facts is not None:
            out.append(channel_entry(facts, share, nodes, local_id, org))
    return out


def with_event(entry: CatalogEntry, event: str) -> CatalogEntry:
    return replace(entry, event=event)
