"""Domain errors: one type per artifact. Every message names the fix (field, flag, valid example).

The CLI renders any :class:`RxcurateError` as one line on stderr and exits with status 2.
"""

from __future__ import annotations


class RxcurateError(Exception):
    """Base class of all expected, user-facing errors."""

    exit_code = 2


class SourceError(RxcurateError):
    """A source screen (metadata.csv + images) is missing or malformed."""


class SynthError(RxcurateError):
    """Bad arguments to the synthetic screen generator."""


class ManifestError(RxcurateError):
    """A release manifest is invalid (schema, SQL, sampling)."""


class LayoutError(RxcurateError):
    """A release folder file (release.json, a results or info file) is missing or malformed."""


class LockfileError(RxcurateError):
    """A lockfile is missing, unreadable or inconsistent with its manifest."""


class EngineError(RxcurateError):
    """An unusable ``--engine``/``--address``, or Ray missing or unreachable (rxcurate.runners)."""


class CheckpointError(RxcurateError):
    """A resumable stage's state folder is busy (another run holds its lock) or unusable (rxcurate.checkpoint)."""


class CompressError(RxcurateError):
    """The compression stage met bad input (missing/corrupt image, wrong shape or bit depth)."""


class EmbedError(RxcurateError):
    """The embedding stage met bad input or a bad encoder configuration."""


class BenchmarkError(RxcurateError):
    """A benchmark definition, its inputs or its results are invalid."""


class CardError(RxcurateError):
    """A dataset card or release folder is invalid."""


class PublishError(RxcurateError):
    """Publishing to a target failed or was refused."""


class ReleaseValidationError(RxcurateError):
    """A published release failed validation."""


class PullError(RxcurateError):
    """A pull asked for an unknown target, version or part, or fetched corrupt data."""


class SubmissionError(RxcurateError):
    """A leaderboard submission is malformed."""
