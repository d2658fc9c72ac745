"""Locate or install the `anvil` binary (npm package @foundry-rs/anvil-linux-amd64) for tests/benchmarks.

Order: $TWINSPACE_ANVIL_BIN, `anvil` on PATH, <repo>/.cache/anvil (git-ignored), else
`npm install` into that cache. Returns (path, None) or (None, reason).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "anvil"
PACKAGE = "@foundry-rs/anvil-linux-amd64"
CACHED_BIN = CACHE / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def _works(path: Path) -> bool:
    try:
        return subprocess.run([str(path), "--version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ensure_anvil() -> tuple[Path | None, str | None]:
    env = os.environ.get("TWINSPACE_ANVIL_BIN")
    if env and _works(Path(env)):
        return Path(env), None
    on_path = shutil.which("anvil")
    if on_path and _works(Path(on_path)):
        return Path(on_path), None
    if CACHED_BIN.exists() and _works(CACHED_BIN):
        return CACHED_BIN, None
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"no anvil binary for {platform.system()}/{platform.machine()} (set TWINSPACE_ANVIL_BIN)"
    npm = shutil.which("npm")
    if npm is None:
        return None, "anvil not installed and npm not available to install it"
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
                             capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"npm install {PACKAGE} failed: {exc}"
    if res.returncode != 0 or not CACHED_BIN.exists():
        return None, f"npm install {PACKAGE} failed: {res.stderr.decode()[-300:]}"
    if not _works(CACHED_BIN):
        return None, f"{CACHED_BIN} does not run on this machine"
    return CACHED_BIN, None
