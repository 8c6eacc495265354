"""Shapes of the cluster API (issue 17): the nodes of the cluster as their heartbeats describe them, and the
worker jobs with the node holding each one's lease.

A node's item is validated here, field by field, although it was written by another node of the same
platform: whatever sits in Redis is hostile by default, and one malformed heartbeat must neither break the
answer for the others nor reach the console with an unexpected shape (see ``routes.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ops_portal.schemas import UtcTime

__all__ = ["ClusterJobOut", "ClusterNodesOut", "NodeLoadOut", "NodeOut"]

#: Longest text of a node's item the API passes on (a node id, an address, a URL, a role name).
_TEXT = 512


class NodeLoadOut(BaseModel):
    """What a node carries now, as its last heartbeat said."""

    model_config = ConfigDict(extra="ignore")

    streams: int = Field(ge=0, description="上行流数 / upstream streams on the node (media role)")
    encoders: int = Field(ge=0, description="占用的水印编码器数 / watermark encoders in use (media role)")
    cpu: float = Field(ge=0, description="CPU 占用，0..1 为本节点全部核心 / CPU use, 0..1 of the node's cores")


class NodeOut(BaseModel):
    """One live node: its heartbeat (``cluster.nodes.NodeInfo.as_json()``) plus what the portal derived from it
    by its own clock (``age_s``, ``status``)."""

    model_config = ConfigDict(extra="ignore")

    node_id: str = Field(min_length=1, max_length=_TEXT, description="节点编号 / the node's id (GBOPS_NODE_ID)")
    roles: list[Annotated[str, Field(min_length=1, max_length=_TEXT)]] = Field(
        max_length=16, description="节点角色：sip SIP 信令、media 媒体转发、portal 管理门户、worker 后台任务 / "
        "the node's roles")
    address: str = Field(max_length=_TEXT, description="节点地址 / the node's address")
    http_url: str | None = Field(default=None, max_length=_TEXT,
                                 description="浏览器访问本节点的地址 / the node's URL as browsers reach it")
    load: NodeLoadOut
    last_seen: UtcTime = Field(description="最近一次心跳 / the node's last heartbeat (UTC)")
    started: UtcTime | None = Field(default=None, description="节点启动时间 / when the node started (UTC)")
    draining: bool = Field(description="排空中：不再接收新的流 / draining: takes no new streams")
    age_s: float = Field(description="距最近一次心跳的秒数（按门户的时钟）/ seconds since the last heartbeat, by "
                         "the portal's clock")
    status: Literal["online", "draining", "stale"] = Field(
        description="online 在线、draining 排空中、stale 心跳超时（超过 stale_after_s 未收到心跳）/ online, "
        "draining, or stale (no heartbeat for stale_after_s)")


class ClusterJobOut(BaseModel):
    """A worker job: exactly one node of the cluster runs it, the one holding its lease."""

    name: str = Field(description="租约名称 / the job's lease name", examples=["job:reports"])
    label: str = Field(description="任务名称 / what the job does", examples=["日报生成 / daily reports"])
    holder: str | None = Field(description="持有租约（正在执行）的节点，无则等待接管 / the node holding the lease "
                               "(running the job); null: none yet, waiting for a worker to take it over")


class ClusterNodesOut(BaseModel):
    """The cluster as this portal sees it."""

    clustered: bool = Field(description="集群模式（已配置 Redis）；否则为单机模式 / cluster mode (Redis configured); "
                            "false: the single process")
    this_node: str = Field(description="应答本请求的节点 / the node answering this request")
    now: UtcTime = Field(description="门户的当前时间，age_s 据此计算 / the portal's clock, which age_s is measured by")
    heartbeat_s: float = Field(description="节点心跳间隔（秒）/ seconds between a node's heartbeats")
    node_ttl_s: float = Field(description="超过此时长无心跳的节点从列表中消失（秒）/ a node without a heartbeat this "
                              "long leaves the list (s)")
    stale_after_s: float = Field(description="超过此时长无心跳即标为心跳超时（秒）/ a node is marked stale after this "
                                 "long without a heartbeat (s)")
    items: list[NodeOut]
    jobs: list[ClusterJobOut]
