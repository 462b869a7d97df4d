"""Check Flux texts with the real Flux compiler, from Python tests.

No InfluxDB 2 server can run on the development machines, so a typo in a Flux query would
only show up in production. ``tests/fluxcheck/check.mjs`` runs libflux (the parser and type
checker InfluxDB itself uses, compiled to wasm in ``@influxdata/flux-lsp-browser``) under
node; this wrapper feeds it many sources in ONE node process (loading the 3.7 MB wasm costs
about a second; per source it is milliseconds).

A missing node or npm package is an error, not a skip: a silently skipped compiler check is
exactly how an invalid query would reach production.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FLUXCHECK_DIR = Path(__file__).resolve().parents[1] / "fluxcheck"
_SCRIPT = FLUXCHECK_DIR / "check.mjs"
_PACKAGE = FLUXCHECK_DIR / "node_modules" / "@influxdata" / "flux-lsp-browser"
_INSTALL_HINT = "run `npm ci --prefix tests/fluxcheck` (from the repository root)"


class FluxCompilerMissing(RuntimeError):
    """node or the npm package is not installed: the Flux check cannot run."""


@dataclass(frozen=True)
class FluxResult:
    """The compiler's verdict on one source."""

    valid: bool
    errors: list[str]
    # literal values as the Flux parser read them: lets tests prove the escaping round-trips
    strings: list[str] = field(default_factory=list)
    regexes: list[str] = field(default_factory=list)


def check_flux(sources: list[str], *, timeout_s: float = 120.0) -> list[FluxResult]:
    """Parse and type-check every source; one result per source, in order."""
    node = shutil.which("node")
    if node is None:
        raise FluxCompilerMissing(f"node is not on PATH; install Node.js >= 18, then {_INSTALL_HINT}")
    if not (_PACKAGE / "package.json").is_file():
        raise FluxCompilerMissing(f"@influxdata/flux-lsp-browser is not installed: {_INSTALL_HINT}")
    if not sources:
        return []
    completed = subprocess.run(
        [node, str(_SCRIPT)],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode == 3:
        raise FluxCompilerMissing(f"{completed.stderr.strip()} ({_INSTALL_HINT})")
    if completed.returncode != 0:
        raise RuntimeError(
            f"check.mjs failed (exit {completed.returncode}): {completed.stderr.strip()}"
        )
    raw = json.loads(completed.stdout)
    if len(raw) != len(sources):
        raise RuntimeError(f"check.mjs returned {len(raw)} results for {len(sources)} sources")
    return [
        FluxResult(
            valid=bool(item["valid"]),
            errors=list(item["errors"]),
            strings=list(item.get("strings", [])),
            regexes=list(item.get("regexes", [])),
        )
        for item in raw
    ]
