"""Contract validation, the channel a contract covers, its scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from device_registry.events import CatalogReported
from device_registry.models import OrgNode
from gbcore.ids import ChannelRef
from ops_portal.contracts import (
    Contract,
    ContractError,
    contract_for_channel,
    contract_scope,
    validate_contract,
)
from tests.registry._support import DEV, cam, item, reg, t

T = datetime(2025, 1, 1, tzinfo=UTC)
OK = dict(storage_days=30, repair_limit_hours=48, online_rate_threshold=0.85, rate_rule="time_weighted",
          sample_minutes=None, valid_from=T, valid_until=None, quality_terms={"min_width": 1920})


def test_valid_terms_pass() -> None:
    validate_contract(**OK)
    validate_contract(**{**OK, "storage_days": 7, "rate_rule": "sampled", "sample_minutes": 5})


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"storage_days": 6}, "storage_days_too_short"),
        ({"storage_days": 0}, "storage_days_too_short"),
        ({"repair_limit_hours": 0}, "repair_limit_invalid"),
        ({"online_rate_threshold": 1.2}, "online_rate_threshold_invalid"),
        ({"rate_rule": "sampled"}, "sample_minutes_required"),
        ({"rate_rule": "average"}, "rate_rule_invalid"),
        ({"valid_until": T - timedelta(days=1)}, "validity_invalid"),
        ({"quality_terms": {"max_freeze_seconds": -1}}, "quality_terms_invalid"),
    ],
)
def test_invalid_terms_are_refused_with_a_clear_error(change: dict, code: str) -> None:
    with pytest.raises(ContractError) as info:
        validate_contract(**{**OK, **change})
    assert info.value.code == code and " / " in info.value.message
    if code == "storage_days_too_short":
        assert "7" in info.value.message


async def test_contract_covering_a_channel_and_its_scope(registry) -> None:
    await registry.apply([reg(at=0), CatalogReported(DEV, t(1), (item(cam(1)), item(cam(2))), True, "complete 2/2")])
    async with registry.sessionmaker() as session:
        parent = OrgNode(name="区县", kind="manual")
        session.add(parent)
        await session.flush()
        child = OrgNode(name="街道", kind="manual", parent_id=parent.id)
        session.add(child)
        await session.flush()
        from sqlalchemy import update

        from device_registry.models import Channel

        await session.execute(update(Channel).where(Channel.channel_id == cam(2)).values(org_node_id=child.id))
        broad = Contract(name="broad", org_node_ids=[parent.id], channel_ids=[], storage_days=30,
                         repair_limit_hours=48, quality_terms={}, valid_from=T)
        strict = Contract(name="strict", org_node_ids=[], channel_ids=[cam(2)], storage_days=90,
                          repair_limit_hours=12, quality_terms={}, valid_from=T, valid_until=T + timedelta(days=30))
        session.add_all([broad, strict])
        await session.commit()

        # issue 11: a channel is (device, channel id)
        assert await contract_for_channel(session, ChannelRef(DEV, cam(1)), T + timedelta(days=1)) is None
        assert (await contract_for_channel(session, ChannelRef(DEV, cam(2)), T + timedelta(days=1))).name == "strict"
        assert (await contract_for_channel(session, ChannelRef(DEV, cam(2)), T + timedelta(days=31))).name == "broad"
        scope = await contract_scope(session, broad.id)
        assert scope is not None and not scope.all
        assert scope.org_node_ids == frozenset({parent.id, child.id})  # descendants included
        assert scope.allows(ChannelRef(DEV, cam(2)), child.id, None)
        assert not scope.allows(ChannelRef(DEV, cam(1)), None, None)
        assert await contract_scope(session, 999) is None
