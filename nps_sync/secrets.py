"""Secrets come from environment variables or from files in systemd's ``$CREDENTIALS_DIRECTORY``.

Never from the config file: the config names *which* secret to use, this module finds its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from nps_sync.errors import ConfigError


class Secrets:
    """Look secrets up by name: env var ``NAME`` first, then ``$CREDENTIALS_DIRECTORY/name``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _credentials_dir(self) -> Path | None:
        value = self._environ.get("CREDENTIALS_DIRECTORY")
        return Path(value) if value else None

    def get(self, name: str) -> SecretStr | None:
        """Return the secret, or None when neither source has it."""
        if name in self._environ and self._environ[name] != "":
            return SecretStr(self._environ[name])
        cred_dir = self._credentials_dir()
        for candidate in (name, name.lower(), name.lower().replace("_", "-")):
            if cred_dir is not None and (cred_dir / candidate).is_file():
                return SecretStr((cred_dir / candidate).read_text().strip())
        return None

    def require(self, name: str, *, purpose: str) -> SecretStr:
        """Return the secret or raise a ConfigError that says where we looked."""
        value = self.get(name)
        if value is None:
            cred_dir = self._credentials_dir()
            where = f"environment variable {name}"
            where += (
                f", or a file {name} / {name.lower().replace('_', '-')} in {cred_dir}"
                if cred_dir
                else " ($CREDENTIALS_DIRECTORY is not set, so no credential files were searched)"
            )
            raise ConfigError(f"missing secret for {purpose}: looked in {where}")
        return value
