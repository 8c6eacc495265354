"""Audit action names: what each entry's ``action`` may be.

Names are dotted and lower-case (``<area>.<what>``).  :data:`WIRED_ACTIONS` are recorded today;
:data:`PENDING_ACTIONS` belong to features that do not exist yet (device and settings administration):
they are accepted by :meth:`AuditLog.append` now so that those features only have to call it.  Detail fields each feature should record are listed in
the descriptions; ``GET /api/audit/downloads`` reads the ``download.*`` fields below.
"""

from __future__ import annotations

import re

__all__ = ["ACTIONS", "ACTION_RE", "PENDING_ACTIONS", "WIRED_ACTIONS", "action_label", "check_action"]

ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

WIRED_ACTIONS: dict[str, str] = {
    "auth.login": "登录成功 / logged in (detail: token_id)",
    "auth.login_failed": "登录失败 / failed login (detail: reason = bad_credentials | unknown_user | locked | disabled | account_expired | account_not_yet_valid | totp_failed | admin_network)",
    "auth.lockout": "登录失败次数过多，账户锁定 / account locked after too many failures (detail: locked_until)",
    # issue 11: a 403 for permission or scope (target: the path's object; at most
    # GBOPS_ACCESS_DENIED_AUDIT_PER_MINUTE per user a minute, then one entry with summary: true, suppressed)
    "access.denied": "越权访问被拒绝 / request refused for permission or scope (detail: route, error, params; "
                     "or summary, suppressed)",
    "auth.logout": "注销 / logged out (detail: token_id)",
    "user.password_change": "修改密码 / password changed (detail: revoked_tokens)",
    "user.password_change_failed": "修改密码失败（原密码错误）/ password change refused: wrong old password",
    "device.password_set": "设置或清除设备 SIP 密码 / device SIP password set or cleared (detail: cleared)",
    "device.catalog_sync": "请求同步设备目录 / catalog sync requested (detail: sn)",
    "device.create": "添加设备 / device added (detail: settings, password_set, revived)",
    "device.update": "修改设备 / device changed (detail: the fields sent; password_set / password_cleared)",
    "device.delete": "删除设备 / device deleted (detail: force, was_online)",
    "channel.update": "修改通道 / channel changed (detail: the fields sent)",
    "device.import": "导入设备 / devices imported (detail: file, total, created, failed, errors)",
    "device.batch": "批量操作设备 / batch action on devices (detail: action, device_ids, failed, org_node_id, force)",
    # issue 11: SIP requests refused because they are not from the device they claim (target device:<id>,
    # actor anonymous named by the source address; at most 10 per source address a minute, the rest counted)
    "security.sip_refused": "拒绝冒充设备的 SIP 请求或锁定地址 / SIP request refused: not from the device's "
                            "registered address, or a REGISTER lockout (detail: kind = address_mismatch | "
                            "lockout, method, transport, remote_addr, reason, suppressed_before)",
    "audit.export": "导出审计日志 / audit log exported (detail: from, to, tree_size, sha256)",
    # live video (detail: device_id, transport, codec; stop adds reason, duration_s)
    "live.start": "开始实时预览 / live view started",
    "live.stop": "结束实时预览 / live view stopped (detail: reason, duration_s)",
    # issue 17: a draining media node handed the viewing to another one (same session; its live.stop comes once)
    "live.move": "实时预览迁移到另一媒体节点 / live view moved to another media node (detail: from, to, reason)",
    # issue 17: a clustered node drained and stopped (target node:<id>; detail: by = "signal" or the operator's
    # user@host of `gbops node drain`, moved, failed, left = sessions moved, not moved, still open at the end)
    "node.drain": "节点排空并停止 / a cluster node drained and stopped (detail: by, moved, failed, left)",
    # reports (issue 7)
    "report.export": "导出报表 / report exported (detail: report, kind, label, start, end, format, file, sha256, "
                     "bytes, source_sha256, checkpoint_size, checkpoint_root, rate, threshold, breach, scope)",
    # watermark (recorded at platform start when the effective policy differs from the last entry)
    "watermark.policy_change": "水印策略变更 / watermark policy changed (detail: before, after)",
    # download (detail: job_id, device_id, channel_id, start, end, session_id, watermark_id;
    # complete adds sha256, bytes, frames; failed adds reason)
    "download.request": "请求视频下载 / video download requested",
    "download.complete": "视频下载文件已生成 / download file made (detail: sha256, bytes)",
    "download.failed": "视频下载失败 / video download failed (detail: reason)",
    "download.fetch": "他人取走下载文件 / a download file fetched by someone other than its requester (detail: "
                      "job_id, requester_id, requester, device_id, channel_id, sha256, bytes, session_id, "
                      "watermark_id)",
    # tickets and contracts (issue 7); automatic tickets are recorded with a system actor
    "ticket.create": "报修（人工或自动生成工单） / ticket reported (detail: kind, source, channel_id, device_id, "
                     "anomaly, contract_id, deadline)",
    "ticket.transition": "工单状态变更 / ticket state changed (detail: from, to, action; feedback adds repair_seconds)",
    "ticket.snapshot": "上传工单现场图片 / ticket snapshot attached (detail: bytes, type)",
    "ticket.snapshot_fetch": "查看工单现场图片（带查看者水印）/ ticket snapshot fetched, watermarked for the viewer "
                             "(detail: device_id, channel_id, sha256 of the image served, watermark_id)",
    "contract.create": "新建合同 / contract created (detail: its terms)",
    "contract.update": "修改合同 / contract changed (detail: before, after)",
    "contract.delete": "删除合同 / contract deleted (detail: its terms)",
    # users, roles, grants, organisation (issue 6; target user:<id>, role:<id>, org_node:<id>)
    "user.create": "创建用户 / user created (detail: username, role_ids, ptz_level, valid_from, valid_until)",
    "user.update": "修改用户 / user changed (detail: fields, changes)",
    "user.delete": "删除用户 / user deleted (detail: username, roles)",
    "user.disable": "停用用户 / user disabled",
    "user.enable": "启用用户 / user enabled",
    "user.password_reset": "管理员重置密码 / password reset by an administrator (detail: revoked_tokens)",
    "user.sessions_revoke": "管理员注销用户全部会话 / every session of a user ended (detail: revoked_tokens)",
    "role.create": "创建角色 / role created (detail: name, permissions, full_scope, org_node_ids, channels)",
    "role.update": "修改角色 / role changed (detail: fields, changes)",
    "role.delete": "删除角色 / role deleted (detail: name, users)",
    # issue 11: a grant on a bare channel id that several devices report, split per device by migration 0007
    # (recorded at the next start; unresolved: no device had the id, the grant is kept with device_id '')
    "role.grant_split": "旧通道授权按设备拆分 / a channel grant split per device (detail: role, channel_id, "
                        "device_ids, channels, unresolved, migrated_at, migration)",
    "grant.add": "授予用户角色 / role given to a user (detail: role_id, role)",
    "grant.remove": "收回用户角色 / role taken from a user (detail: role_id, role)",
    "org.create": "创建组织节点 / organisation node created (detail: name, parent_id)",
    "org.update": "修改组织节点（重命名、移动）/ organisation node renamed or moved (detail: fields, changes)",
    "org.delete": "删除组织节点 / organisation node deleted (detail: children, devices, channels, moved_to, force)",
    "org.assign": "分配设备/通道到组织节点 / devices and channels assigned to a node (detail: device_ids, "
                  "channels)",
    # history video (issue 13; target channel:<device_id>/<channel_id>; windows in Beijing time, RFC 3339)
    "playback.start": "开始录像回放 / playback started (detail: device_id, channel_id, start, end, source, "
                      "transport)",
    "playback.stop": "结束录像回放 / playback stopped (detail: device_id, channel_id, start, end, reason, "
                     "duration_s)",
    "playback.control": "回放控制 / playback control (detail: command = pause | resume | seek | speed, value)",
    "record.plan": "修改录像计划 / recording plan changed (detail: device_id, channel_id, mode, stream, schedule)",
    "record.segment": "录像片段已保存 / a recorded segment was stored (detail: channel, start, end, bytes, "
                      "sha256 of the bytes as stored)",
    "record.delete": "过期录像已删除 / an expired segment was deleted (detail: channel, start, end, sha256, "
                     "retention_days)",
    "record.repair": "录像副本已修复 / a missing or damaged copy of a segment was repaired from another root "
                     "(detail: channel, path, root, sha256)",
    "record.disk_full": "录像存储空间不足，录像已停止 / recording stopped: storage is full (detail: root, "
                        "free_mb, channels)",
    # device control (issue 14; target channel:<device_id>/<channel_id> or device:<id>; refused: true when the
    # platform refused it - the PTZ held by another operator - and nothing was sent; error: the device's failure)
    "ptz.control": "云台控制 / PTZ command (detail: device_id, channel_id, action, speed, level, refused, holder, "
                   "seconds_left, error)",
    "ptz.preset": "预置位操作 / preset set, called or deleted (detail: device_id, channel_id, action, preset, "
                  "name, level, refused, holder, seconds_left, error)",
    "ptz.tour": "巡航操作 / preset tour created, started, stopped or deleted; home position set (detail: "
                "device_id, channel_id, action = create | start | stop | delete | home, tour_id, name, points, "
                "preset, enabled, refused, error)",
    "device.control": "设备控制命令 / device control command (detail: device_id, command, params, result, "
                      "answered, error)",
    "alarm.ack": "确认报警 / alarm acknowledged (detail: alarm_id, device_id, channel_id, priority, type, note)",
    # cascade upward (issue 15): target cascade:<platform id> for configuration, the channel for media; every
    # upper request names platform_id and server_id; never a password
    "cascade.platform_add": "添加上级平台 / upper platform added (detail: platform_id, name, server_id, host, port, "
                            "transport; never the password)",
    "cascade.platform_edit": "修改上级平台 / upper platform changed (detail: platform_id, fields; a password change "
                             "is named, never its value)",
    "cascade.platform_delete": "删除上级平台 / upper platform deleted (detail: platform_id, name, server_id)",
    "cascade.share": "修改上级平台共享范围 / what an upper platform sees changed (detail: platform_id, org_nodes, "
                     "channels, before_count, after_count)",
    "cascade.register": "向上级平台注册 / registration with an upper platform changed state (detail: platform_id, "
                        "server_id, state, reason)",
    "cascade.catalog": "上级平台查询目录 / an upper platform's catalog query answered (detail: platform_id, "
                       "server_id, sn, items, result)",
    "cascade.query": "上级平台查询设备信息或状态 / an upper platform's DeviceInfo, DeviceStatus or RecordInfo query "
                     "(detail: platform_id, server_id, cmd_type, device_id, result)",
    "cascade.invite": "上级平台请求视频 / an upper platform's INVITE for live, playback or download (detail: "
                      "platform_id, server_id, upward_id, device_id, channel_id, kind, start, end, transport, "
                      "result, status)",
    "cascade.bye": "上级平台视频结束 / a stream to an upper platform ended (detail: platform_id, server_id, call_id, "
                   "by, reason, duration_s, bytes)",
    "cascade.control": "上级平台云台或设备控制 / an upper platform's PTZ or device control (detail: platform_id, "
                       "server_id, upward_id, command, level, result)",
    "cascade.refused": "拒绝上级平台请求 / an upper platform's request refused (detail: platform_id, server_id, "
                       "method, target, status, reason)",
    # security monitoring (issue 16); target security_alert:<id> or address:<ip>
    "security.alert": "安全告警 / security alert raised (detail: alert_id, rule, rule_zh, key, severity, count, "
                      "source_ip, first_at, last_at, blocked_until)",
    "security.alert_ack": "确认安全告警 / security alert acknowledged (detail: alert_id, rule, key, note)",
    "security.block": "封禁来源地址 / source address blocked (detail: address, until, alert_id, rule, automatic)",
    "security.unblock": "解除地址封禁 / address block ended (detail: address, reason = manual | expired)",
    # accounts: second factor, password age (issue 16)
    "auth.totp_enable": "启用两步验证 / two-step verification (TOTP) turned on (detail: method)",
    "auth.totp_disable": "停用两步验证 / two-step verification turned off by its user (detail: by)",
    "user.totp_reset": "管理员重置用户的两步验证 / a user's second factor reset by an administrator (detail: "
                       "was_enabled, revoked_tokens)",
    # backup and restore (issue 16)
    "backup.create": "创建加密备份 / encrypted backup created (detail: file, bytes, sha256, tables, rows, files, "
                     "revision, trigger = cli | schedule; schedule adds pruned)",
    "backup.failed": "定时备份失败 / scheduled backup failed (detail: error)",
    "backup.restore": "从备份恢复（记录在恢复后的日志上）/ restored from a backup, recorded on the restored log "
                      "(detail: file, bytes, sha256, created_at, revision, tables, rows, files)",
    # security check (issue 16); the target is the report id
    "security.check": "导出安全检查报告 / security check report exported (detail: format, file, "
                      "sha256, bytes, source_sha256, counts, codes)",
}

PENDING_ACTIONS: dict[str, str] = {
    # settings, tickets, reports
    "setting.change": "修改系统设置 / setting changed (detail: name, before, after; never secrets)",
}

ACTIONS: dict[str, str] = {**WIRED_ACTIONS, **PENDING_ACTIONS}


def check_action(action: str) -> str:
    if action not in ACTIONS:
        if not ACTION_RE.fullmatch(action):
            raise ValueError(f"audit action {action!r} is not a dotted lower-case name")
        raise ValueError(f"unknown audit action {action!r}: add it to audit_log.actions")
    return action


def action_label(action: str) -> tuple[str, str]:
    """The words people read for ``action``: (Chinese, English), from its description without the detail
    notes (``"开始实时预览 / live view started"`` -> ``("开始实时预览", "live view started")``).  An action
    outside the catalogue reads as its own name in both."""
    text = ACTIONS.get(action)
    if text is None:
        return action, action
    zh, sep, en = text.partition("/ ")  # "中文 / English" (some Chinese parts end in a full-width bracket)
    if not sep:
        return text, text
    cut = en.find(" (detail")
    return zh.strip(), (en[:cut] if cut >= 0 else en).strip()

