"""``gbops keys init``: make the shared keys of a cluster once, into the folder every node is given.

Registered in :mod:`gbops.cli` as the ``keys`` group.  The work is :func:`gbops.secrets.init_keys`; this
module only parses the options and prints (Chinese first).  Exit status: 0 the folder holds every key,
1 a key could not be written, 2 bad settings or no folder named.
"""

from __future__ import annotations

from pathlib import Path

import typer

keys_app = typer.Typer(help="共享密钥（集群）/ shared keys of a cluster", no_args_is_help=True, add_completion=False)



@keys_app.callback()
def keys_group() -> None:
    """共享密钥（集群）/ shared keys of a cluster."""


_CONSEQUENCES = {
    "audit-signing.key": "已固定的审计验证密钥将失效 / auditors' pinned verifier key no longer matches",
    "watermark-tag.key": "旧画面中的会话标签无法用新密钥验证 / tags in earlier pictures no longer verify with it",
    "cascade.key": "已保存的上级平台密码无法解开，须重新输入 / stored upper-platform passwords must be entered again",
    "record.key": "已加密的录像无法再读取 / recordings encrypted so far can no longer be read",
    "totp.key": "用户的双因素须全部重置 / every user's second factor must be reset",
}


@keys_app.command("init")
def keys_init(
    directory: Path | None = typer.Option(None, "--dir", help="密钥目录 / the keys folder (default: "
                                          "GBOPS_SECRETS_DIR)"),
    force: bool = typer.Option(False, "--force", help="替换已有密钥（危险）/ replace existing keys (dangerous)"),
    origin: str | None = typer.Option(None, "--origin", help="审计日志来源 / the audit log origin (default: "
                                      "from GBOPS_AUDIT_ORIGIN / GBOPS_SIP_ID, as the nodes have it)"),
) -> None:
    """生成集群共享密钥（每个 0600，已有的不覆盖）/ Generate the cluster's shared keys (each 0600; existing ones
    are kept unless --force), and print the audit verifier key to pin."""
    from gbops.cli import _settings
    from gbops.secrets import init_keys

    settings = _settings()
    folder = directory if directory is not None else settings.secrets_dir
    if folder is None:
        typer.echo("请用 --dir 指定密钥目录（或设置 GBOPS_SECRETS_DIR）/ name the keys folder with --dir "
                   "(or set GBOPS_SECRETS_DIR)", err=True)
        raise typer.Exit(2)
    name = origin or settings.audit_log_origin
    try:
        from audit_log.note import check_key_name

        check_key_name(name)
    except ValueError as exc:
        typer.echo(f"审计日志来源无效 / invalid audit log origin: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        result = init_keys(folder, origin=name, force=force)
    except OSError as exc:
        typer.echo(f"无法写入密钥 / cannot write the keys: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"密钥目录 / keys folder: {result.directory.resolve()}")
    for file_name in result.created:
        typer.echo(f"  已生成 / created:  {file_name}")
    for file_name in result.kept:
        typer.echo(f"  已存在，未覆盖 / exists, kept:  {file_name}（替换须加 --force / --force replaces it）")
    for file_name in result.replaced:
        typer.echo(f"  已替换 / REPLACED:  {file_name}: {_CONSEQUENCES[file_name]}")
    if result.audit_vkey:
        typer.echo(f"\n审计验证密钥（请审计方固定保存）/ audit verifier key (auditors pin it), origin {name}:\n"
                   f"{result.audit_vkey}")
    if result.watermark_public_key:
        typer.echo(f"\n水印标签公钥 / watermark tag public key:\n{result.watermark_public_key.rstrip()}")
    typer.echo(f"\n把该目录交给每个节点，并设置 GBOPS_SECRETS_DIR={result.directory.resolve()}（各节点的 GBOPS_SIP_ID / "
               f"GBOPS_AUDIT_ORIGIN 须给出同一来源 {name}）/ give this folder to every node and set GBOPS_SECRETS_DIR "
               f"(every node's GBOPS_SIP_ID / GBOPS_AUDIT_ORIGIN must give the same origin {name})")
