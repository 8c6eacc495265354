"""Container entrypoint: turn secret files into ``GBOPS_*`` settings, then exec ``gbops``.

Why: the platform reads its passwords (``GBOPS_SIP_PASSWORD``, ``GBOPS_ADMIN_PASSWORD``) and the URLs that
carry credentials (``GBOPS_DATABASE_URL``, ``GBOPS_REDIS_URL``) from the environment only, while compose
secrets and Kubernetes Secret volumes arrive as files.  Each file under the secrets folder whose name is a
setting's variable (``/run/secrets/GBOPS_SIP_PASSWORD``) becomes that variable, unless the environment
already sets it.  A file named like a setting that does not exist stops the start: a typo must not leave
a password silently unset.  Files are read once, stripped of one trailing newline, and never logged.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

SECRETS_DIR = Path("/run/secrets")
_NAME = re.compile(r"^GBOPS_[A-Z0-9_]+$")


class SecretFileError(RuntimeError):
    """A secret file that cannot be used; the message names it (never its content)."""


def known_variables() -> frozenset[str]:
    """Every ``GBOPS_*`` variable :class:`gbcore.settings.Settings` reads."""
    from gbcore.settings import Settings

    return frozenset(f"GBOPS_{name.upper()}" for name in Settings.model_fields)


def secret_environment(folder: Path, known: frozenset[str], env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add from ``folder``: files named ``GBOPS_*`` not already in ``env``.

    Entries that are not named like a variable (Kubernetes' ``..data`` links, README files) are ignored.
    """
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if not _NAME.match(path.name) or not path.is_file():
            continue
        if path.name not in known:
            raise SecretFileError(f"密钥文件 {path} 不对应任何配置项 / secret file {path} names no setting")
        if path.name in env:
            continue
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretFileError(f"无法读取密钥文件 / cannot read secret file {path}: {type(exc).__name__}") from None
        if value.endswith("\n"):
            value = value[:-1]
        if value.endswith("\r"):
            value = value[:-1]
        if not value:
            raise SecretFileError(f"密钥文件为空 / secret file {path} is empty")
        found[path.name] = value
    return found


def prepare(env: MutableMapping[str, str], folder: Path = SECRETS_DIR) -> None:
    env.update(secret_environment(folder, known_variables(), env))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv) or ["run"]
    try:
        prepare(os.environ)
    except SecretFileError as exc:
        print(f"无法启动 / cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.execvp("gbops", ["gbops", *args])


if __name__ == "__main__":
    main()
