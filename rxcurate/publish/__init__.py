"""Publishing a release folder to a target: ``local://`` (a git hub on disk, the offline default), ``hf://`` (the
Hugging Face Hub) or ``polaris://`` (Polaris artifacts).

:func:`publish` validates the whole release folder locally (the same checks as ``rxcurate validate``) before any
network call or hub write, then hands the release files to the target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rxcurate.errors import PublishError
from rxcurate.publish.targets import Target, parse_target, resolve_target

__all__ = ["Target", "parse_target", "resolve_target", "publish", "release_target"]


def release_target(target: str, folder: str | os.PathLike[str], hub: str | os.PathLike[str] | None = None) -> Target:
    """Parse ``target`` with the release's repo_id as the default for a bare ``local``."""
    from rxcurate.release import read_release_json

    release = read_release_json(folder, PublishError)
    return resolve_target(target, hub, default_repo_id=release.get("repo_id"))


def publish(folder: str | os.PathLike[str], target: str = "local", *, hub: str | os.PathLike[str] | None = None,
            api: Any = None, sample: int = 64, seed: int = 0, full: bool = False, private: bool | None = None,
            message: str | None = None) -> dict[str, Any]:
    """Validate the release folder, then publish it to ``target``. Returns a JSON-able result."""
    from rxcurate.release import read_release_json, release_files
    from rxcurate.validate import validate_folder

    folder = Path(folder)
    release = read_release_json(folder, PublishError)
    t = resolve_target(target, hub, default_repo_id=release.get("repo_id"))
    version = release.get("version")
    if t.version not in (None, "latest", version):
        raise PublishError(f"{target}: the release folder holds version {version}; the version comes from the "
                           f"manifest (drop @{t.version} or set version: {t.version} in the manifest)")
    report = validate_folder(folder, full=full, sample=sample, seed=seed)
    if not report.ok:
        first = report.failures[0].message if report.failures else "no checks ran"
        raise PublishError(f"{folder} does not validate ({len(report.failures)} failure(s); first: {first}): nothing "
                           f"was published; fix it (rerun the stage that wrote the file, then rxcurate card)")
    files = release_files(folder)
    if t.kind == "local":
        from rxcurate.publish.local import LocalHub

        result = LocalHub(t.hub).publish(t.repo_id, version, folder, files, message=message).to_dict()
        result["hub"] = str(t.hub)
    elif t.kind == "hf":
        from rxcurate.publish.hf import publish_hf

        result = publish_hf(t.repo_id, version, folder, files, api=api, private=private, message=message).to_dict()
    else:
        from rxcurate.publish.polaris import publish_polaris

        result = publish_polaris(folder, t.org, t.name).to_dict()
        result["version"] = version
    result["checks"] = len(report.findings)
    return result
