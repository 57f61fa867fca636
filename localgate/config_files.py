"""Files localgate keeps in its data dir beside the database: reading TOML with
errors that name the file, ``secrets.toml`` and ``admin-token`` (mode 0600,
refused otherwise), and the data dir's own privacy: the dir is 0700 and every
file in it 0600, so other local users can read neither money nor secrets."""

from __future__ import annotations

import os
import secrets
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localgate.errors import ConfigError

SECRETS_FILE = "secrets.toml"  # upstream keys and other secrets, mode 0600
ADMIN_TOKEN_FILE = "admin-token"  # the wallet UI's and admin API's token, mode 0600


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; check --config / LOCALGATE_CONFIG"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"{path}: cannot read the config file (permission denied); fix its mode"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; --config needs a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text; save the file as UTF-8") from None


@dataclass(frozen=True)
class SecretsFile:
    """<data dir>/secrets.toml (mode 0600): upstream keys by channel id, and
    values for environment variable names localgate reads (``[env]``)::

        [channels.openai]
        api_key = "sk-..."

        [env]
        STRIPE_SECRET_KEY = "sk_live_..."

    The environment wins over this file, as it does over config.toml.
    """

    channels: Mapping[str, str] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def channel_key(
        self, channel_id: str, key_env: str | None, environ: Mapping[str, str]
    ) -> tuple[str | None, str]:
        """(key, where it came from) for a channel; (None, "") when there is none."""
        if key_env and environ.get(key_env):
            return environ[key_env], f"env {key_env}"
        if self.channels.get(channel_id):
            return self.channels[channel_id], SECRETS_FILE
        if key_env and self.env.get(key_env):
            return self.env[key_env], f"{SECRETS_FILE} [env] {key_env}"
        return None, ""


def refuse_if_readable_by_others(path: Path) -> None:
    """A file holding secrets that others can read is refused, as ssh refuses a
    private key with loose permissions: the secret may have leaked already."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path}: holds secrets but its mode is {mode:04o}; make it private: chmod 600 {path}"
        )


def read_secrets(path: Path) -> SecretsFile:
    """Load secrets.toml; a missing file is empty. A file others can read is refused,
    as ssh refuses a private key with loose permissions."""
    if not path.exists():
        return SecretsFile()
    refuse_if_readable_by_others(path)
    raw = read_toml(path)
    unknown = sorted(set(raw) - {"channels", "env"})
    if unknown:
        raise ConfigError(f"{path}: unknown table [{unknown[0]}]; use [channels.<id>] or [env]")
    keys: dict[str, str] = {}
    tables = raw.get("channels") or {}
    if not isinstance(tables, dict):
        raise ConfigError(f'{path}: channels must be tables: [channels.<id>] api_key = "..."')
    for cid, table in tables.items():
        if not isinstance(table, dict) or set(table) - {"api_key"}:
            raise ConfigError(f'{path}: [channels.{cid}] may hold only api_key = "..."')
        if not isinstance(table.get("api_key", ""), str):
            raise ConfigError(f"{path}: channels.{cid}.api_key must be a string")
        if table.get("api_key"):
            keys[cid] = table["api_key"]
    env_table = raw.get("env") or {}
    if not isinstance(env_table, dict) or not all(isinstance(v, str) for v in env_table.values()):
        raise ConfigError(f'{path}: [env] must map variable names to strings: NAME = "value"')
    return SecretsFile(keys, dict(env_table))


def admin_token(ddir: Path, *, create: bool) -> tuple[str, bool]:
    """(the admin token, whether it was created just now); ("", False) when there is
    none and ``create`` is off. A token file others can read is refused."""
    path = ddir / ADMIN_TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            refuse_if_readable_by_others(path)
            return token, False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the admin token ({exc.strerror}); fix its mode"
        ) from None
    if not create:
        return "", False
    token = secrets.token_urlsafe(32)  # core/receipts.mask_secrets knows this shape
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def make_data_dir(ddir: Path) -> None:
    """Create the data dir, private (0700) from the start; an existing one is left
    as it is (``localgate serve`` tightens it, ``doctor`` reports it)."""
    ddir.mkdir(mode=0o700, parents=True, exist_ok=True)


def loose_permissions(ddir: Path) -> list[tuple[Path, int]]:
    """The data dir and the files directly in it that others may read or write,
    with their modes. Symlinks are not followed (their target is not ours to judge)."""
    if os.name != "posix" or not ddir.is_dir():
        return []
    found = []
    for path in (ddir, *sorted(ddir.iterdir())):
        st = path.lstat()
        if (path == ddir or stat.S_ISREG(st.st_mode)) and st.st_mode & 0o077:
            found.append((path, stat.S_IMODE(st.st_mode)))
    return found


def tighten_data_dir(ddir: Path) -> list[Path]:
    """Make the data dir 0700 and every file in it 0600 (those this user owns);
    returns what was changed."""
    changed = []
    for path, _mode in loose_permissions(ddir):
        if path.lstat().st_uid != os.geteuid():
            continue
        os.chmod(path, 0o700 if path == ddir else 0o600)
        changed.append(path)
    return changed
