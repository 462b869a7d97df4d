"""docker-compose.yml as compose reads it, without Docker: the env file, interpolation, profiles.

No Docker engine runs here or in CI, so the deployment tests render the compose file
themselves, the way `docker compose config` would: read `.env` (KEY=value, quotes removed),
substitute `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}` (and `$$`)
in every string, and drop the services whose profiles are all inactive. YAML merge keys
(`<<: *anchor`) are resolved by the YAML loader, as compose resolves them. What is rendered
is then checked against the compose specification's JSON schema (tests/ops/compose-spec.json,
schema/compose-spec.json of github.com/compose-spec/compose-spec at commit 170098ba07d9,
2026-06-23; replace the file to follow a newer specification).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
AMBA_NETWORK_PATH = ROOT / "docker-compose.amba-network.yml"
ENV_PATH = ROOT / ".env.example"
SCHEMA_PATH = ROOT / "tests" / "ops" / "compose-spec.json"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}; `$${...}` is an escaped `$`.
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class ComposeError(AssertionError):
    """What `docker compose` would refuse: a required variable unset, a disabled dependency."""


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines; surrounding quotes removed as compose does. Comments are skipped."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", stripped)
        assert match, f"{path.name}:{number}: not KEY=value: {line!r}"
        key, value = match.groups()
        assert key not in values, f"{path.name}:{number}: {key} defined twice"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """One string with compose's variable substitution."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        value = env.get(name)
        if op == ":-" and not value:
            return arg
        if op == "-" and value is None:
            return arg
        if (op == ":?" and not value) or (op == "?" and value is None):
            raise ComposeError(f"compose requires {name}: {arg}")
        return value or ""

    return VAR.sub(replace, text).replace("$$", "$")


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, env) for value in node]
    return node


def load_compose(path: Path = COMPOSE_PATH) -> dict[str, Any]:
    """The compose file as YAML (merge keys resolved, nothing interpolated)."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """An override file over a compose file (`COMPOSE_FILE=a.yml:b.yml`): mappings merge key by
    key, any other value replaces. Compose merges lists such as a service's `networks` too; the
    override files here only add them to services that have none."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def active_profiles(env: Mapping[str, str]) -> set[str]:
    """COMPOSE_PROFILES, as compose reads it from the environment or .env."""
    return {name.strip() for name in env.get("COMPOSE_PROFILES", "").split(",") if name.strip()}


def render(env: Mapping[str, str], document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The project compose would run with this environment: interpolated, profiles applied.

    Raises :class:`ComposeError` where compose refuses to start: a `${VAR:?}` unset, or an
    enabled service that depends on a disabled one without `required: false`.
    """
    source = copy.deepcopy(dict(document) if document is not None else load_compose())
    rendered: dict[str, Any] = _interpolate_tree(source, env)
    profiles = active_profiles(env)
    services: dict[str, Any] = rendered["services"]
    enabled = {name: svc for name, svc in services.items()
               if not svc.get("profiles") or profiles & set(svc["profiles"])}
    for name, svc in enabled.items():
        depends = svc.get("depends_on", {})
        entries = {dep: {} for dep in depends} if isinstance(depends, list) else depends
        for dependency, options in entries.items():
            if dependency in enabled:
                continue
            if dependency not in services:
                raise ComposeError(f"{name} depends on undefined service {dependency}")
            if options.get("required", True):
                raise ComposeError(f"{name} requires {dependency}, which its profiles disable")
    rendered["services"] = enabled
    return rendered


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    """Where a (rendered) compose document breaks the compose specification's schema."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema())
    return [f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}"
            for error in validator.iter_errors(dict(document))]


def profile_combinations(names: Iterable[str]) -> list[frozenset[str]]:
    """Every on/off combination of the given profiles (2**n)."""
    ordered = sorted(names)
    return [frozenset(name for bit, name in enumerate(ordered) if mask >> bit & 1)
            for mask in range(2 ** len(ordered))]


#: Where compose mounts a service's secrets.
SECRETS_MOUNT = "/run/secrets/"


def with_secret_files(project: Mapping[str, Any], service: str, directory: Path,
                      contents: Mapping[str, str]) -> dict[str, str]:
    """A service's environment, its `/run/secrets/<name>` paths turned into files under ``directory``.

    What compose would mount: the service must list the secret, and the project must define
    it as a file. Each file holds ``contents[name]`` (a newline after it, as an editor leaves).
    """
    svc = project["services"][service]
    environment = {key: str(value) for key, value in svc.get("environment", {}).items()}
    for key, value in environment.items():
        if not value.startswith(SECRETS_MOUNT):
            continue
        name = value.removeprefix(SECRETS_MOUNT)
        assert name in svc.get("secrets", []), f"{service}: {key} reads secret {name}, which it does not list"
        assert "file" in project["secrets"][name], f"secret {name} is not a file"
        path = directory / name
        path.write_text(contents[name] + "\n")
        environment[key] = str(path)
    return environment


def settings_from(environment: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the process would read them from exactly this environment (``*_FILE`` included)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(f"{name.upper()}_FILE", raising=False)
    for key, value in environment.items():
        if value != "":
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)
