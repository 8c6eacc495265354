"""Catalog items that are not channels: business groups, virtual organisations, regions."""

from __future__ import annotations

from sqlalchemy import select

from device_registry.events import CatalogReported
from device_registry.models import OrgNode
from device_registry.service import org_kind_of

from ._support import BG, NVR, VORG, VORG2, cam, item, reg, t


async def _org_nodes(registry) -> dict[str, OrgNode]:
    async with registry.sessionmaker() as session:
        return {n.code: n for n in await session.scalars(select(OrgNode))}


def test_org_kind_of() -> None:
    assert org_kind_of(BG) == "business_group"
    assert org_kind_of(VORG) == "virtual_org"
    assert org_kind_of(cam(1)) is None
    assert org_kind_of("34") == "civil"
    assert org_kind_of("340200") == "civil"
    assert org_kind_of("34020000") == "civil"
    assert org_kind_of("340200000") is None
    assert org_kind_of("3") is None
    assert org_kind_of("34020000002150000001x") is None
    assert org_kind_of("340200000021500000") is None  # 18 digits: an old-style channel id


async def test_business_groups_and_virtual_orgs_become_org_nodes(registry) -> None:
    items = (
        item("3402", None, name="厦门市"),
        item("340200", None, name="思明区"),
        item(BG, None, name="公安业务分组"),
        item(VORG, None, name="一中队", parent_id=BG, business_group_id=BG),
        item(VORG2, None, name="二中队", parent_id=f"{BG}/{VORG}", business_group_id=BG),
        item(cam(1), "ON", name="南门", parent_id=VORG, business_group_id=BG, civil_code="340200"),
        item(cam(2), "ON", name="北门", parent_id=NVR, business_group_id=BG),
        item(cam(3), "ON", name="东门", parent_id=NVR),
    )
    await registry.apply([reg(NVR, 0), CatalogReported(NVR, t(1), items, True, "complete 8/8")])

    nodes = await _org_nodes(registry)
    assert set(nodes) == {"3402", "340200", BG, VORG, VORG2}
    assert {code: n.kind for code, n in nodes.items()} == {
        "3402": "civil",
        "340200": "civil",
        BG: "business_group",
        VORG: "virtual_org",
        VORG2: "virtual_org",
    }
    assert nodes[VORG].name == "一中队"
    assert nodes[VORG].parent_id == nodes[BG].id
    assert nodes[VORG2].parent_id == nodes[VORG].id  # last segment of the ParentID path
    assert nodes["340200"].parent_id == nodes["3402"].id  # region parent from the code prefix
    assert nodes[BG].parent_id is None
    assert all(n.source_device_id == NVR for n in nodes.values())

    chans = {c.channel_id: c for c in await registry.list_channels(NVR)}
    assert set(chans) == {cam(1), cam(2), cam(3)}  # org items are not channels
    assert chans[cam(1)].org_node_id == nodes[VORG].id
    assert chans[cam(2)].org_node_id == nodes[BG].id  # ParentID is the NVR: fall back to the group
    assert chans[cam(3)].org_node_id is None


async def test_org_nodes_from_earlier_catalogs_and_renames(registry) -> None:
    await registry.apply(
        [
            reg(NVR, 0),
            CatalogReported(
                NVR, t(1), (item(BG, None, name="旧名"), item(VORG, None, parent_id=BG)), True, "c"
            ),
        ]
    )
    # a later partial notify: a channel pointing at a node known from the earlier catalog
    await registry.apply(
        [
            CatalogReported(
                NVR, t(2), (item(BG, None, name="新名"), item(cam(1), parent_id=VORG)), False, "notify"
            )
        ]
    )
    nodes = await _org_nodes(registry)
    assert len(nodes) == 2
    assert nodes[BG].name == "新名"
    assert nodes[VORG].name == VORG  # no name reported: the code stands in
    (chan,) = await registry.list_channels(NVR)
    assert chan.org_node_id == nodes[VORG].id
    # the org items did not count as channels when the first catalog was complete
    assert len(await registry.list_channels(NVR, include_removed=True)) == 1


async def test_org_parent_cycles_are_refused(registry) -> None:
    await registry.apply(
        [
            reg(NVR, 0),
            CatalogReported(NVR, t(1), (item(VORG, None), item(VORG2, None, parent_id=VORG)), True, "c"),
        ]
    )
    await registry.apply([CatalogReported(NVR, t(2), (item(VORG, None, parent_id=VORG2),), False, "c")])
    nodes = await _org_nodes(registry)
    assert nodes[VORG2].parent_id == nodes[VORG].id
    assert nodes[VORG].parent_id is None


async def test_a_lower_platforms_own_entry_is_not_a_channel(registry) -> None:
    """A lower platform (type 200) lists itself first in its catalog; that entry is the device, not a channel."""
    lower = "34020000002000000009"
    other_platform = "34020000002000000010"
    items = (
        item(lower, "ON", name="下级平台"),
        item(other_platform, "ON", name="另一平台"),
        item(BG, None, name="公安业务分组"),
        item(cam(1), "ON", name="南门", parent_id=lower),
        item(cam(2), "ON", name="北门", parent_id=BG, business_group_id=BG),
    )
    await registry.apply([reg(lower, 0), CatalogReported(lower, t(1), items, True, "complete 5/5")])
    chans = {c.channel_id: c for c in await registry.list_channels(lower)}
    assert set(chans) == {cam(1), cam(2)}
    nodes = await _org_nodes(registry)
    assert set(nodes) == {BG} and chans[cam(2)].org_node_id == nodes[BG].id
    assert chans[cam(1)].org_node_id is None
