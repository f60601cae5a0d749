"""Publishing a release folder to a target: ``local://`` (a git hub on disk, the offline default), ``hf://`` (the
Hugging Face Hub) or ``polaris://OWNER/BENCHMARK`` (the release's predictions as results of a Polaris benchmark; see
:mod:`rxcurate.publish.polaris`).

:func:`publish` validates the whole release folder locally (the same checks as ``rxcurate validate``) before any
network call or hub write, then hands the release files to the target's :class:`~rxcurate.publish.hub.Hub`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# rxcurate.validate imports rxcurate.publish.hub, which runs this __init__ first: import the module, not a name, so
# this works while validate is still half-initialised.
import rxcurate.validate as validation
from rxcurate.errors import PublishError
from rxcurate.layout import read_release_json, release_files
from rxcurate.publish.hf import redact
from rxcurate.publish.hub import hub_for
from rxcurate.publish.polaris import publish_polaris
from rxcurate.publish.targets import Target, parse_target, refuse_links, relabel, resolve_target

__all__ = ["Target", "parse_target", "resolve_target", "publish", "release_target"]


def release_target(target: str, folder: str | os.PathLike[str], hub: str | os.PathLike[str] | None = None) -> Target:
    """Parse ``target`` with the release's repo_id as the default for a bare ``local``."""
    with relabel(PublishError):
        release = read_release_json(folder)
        return resolve_target(target, hub, default_repo_id=release.repo_id or None, reading=False)


def publish(folder: str | os.PathLike[str], target: str = "local", *, hub: str | os.PathLike[str] | None = None,
            api: Any = None, sample: int = 64, seed: int = 0, full: bool = False, private: bool | None = None,
            message: str | None = None) -> dict[str, Any]:
    """Validate the release folder, then publish it to ``target``. Returns a JSON-able result. Error messages never
    carry a token (:func:`rxcurate.publish.hf.redact`)."""
    try:
        return _publish(Path(folder), target, hub=hub, api=api, sample=sample, seed=seed, full=full, private=private,
                        message=message)
    except PublishError as exc:
        text = redact(str(exc), getattr(api, "token", None))
        if text == str(exc):
            raise
        raise PublishError(text) from None


def _publish(folder: Path, target: str, *, hub: str | os.PathLike[str] | None, api: Any, sample: int, seed: int,
             full: bool, private: bool | None, message: str | None) -> dict[str, Any]:
    with relabel(PublishError):
        release = read_release_json(folder)
        version, repo_id = release.version, release.repo_id or None
    t = resolve_target(target, hub, default_repo_id=repo_id, reading=False)
    if t.version not in (None, "latest", version):
        raise PublishError(f"{target}: the release folder holds version {version}; the version comes from the "
                           f"manifest (drop @{t.version} or set version: {t.version} in the manifest)")
    refuse_links(folder, [*release_files(folder), *release.files], str(t))  # before any check, commit or upload
    report = validation.validate_folder(folder, full=full, sample=sample, seed=seed)
    if not report.ok:
        first = report.failures[0].message if report.failures else "no checks ran"
        raise PublishError(f"{folder} does not validate ({len(report.failures)} failure(s); first: {first}): nothing "
                           f"was published; fix it (rerun the stage that wrote the file, then rxcurate card)")
    files = release_files(folder)
    if t.kind == "polaris":
        result = publish_polaris(folder, t.org, t.name).to_dict()
        result["version"] = version
    else:
        result = hub_for(t, api=api, private=private).publish(t.repo_id, version, folder, files,
                                                              message=message).to_dict()
        if t.kind == "local":
            result["hub"] = str(t.hub)
    result["checks"] = len(report.findings)
    return result
