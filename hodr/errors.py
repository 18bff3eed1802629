"""Error types, chosen by what the supervisor must do next (retry, reconnect, stop).

Every message is one line naming what is wrong and where (brief: "bad input gets a clear one-line
error"), because it ends up in ``ocf-exit-reason``, the status file and the log.
"""


class HodrError(Exception):
    """Base of every error hodr raises on purpose."""


class ConfigError(HodrError):
    """Invalid configuration; ``errors`` lists every problem as ``key.path: problem``."""

    def __init__(self, errors: list[str] | str, source: str = "") -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(self.errors))


class Retryable(HodrError):
    """A transient failure: the stage backs off and tries again, nothing is lost."""


class RetryableCaptureError(Retryable):
    pass


class RetryableTransportError(Retryable):
    pass


class RetryableApplyError(Retryable):
    pass


class HodrFatal(HodrError):
    """The stage must stop before acknowledging anything (architecture I9: fail closed)."""


class CorruptData(HodrFatal):
    """A durable file or a frame failed its checks; names the file/peer and the offset."""


class SchemaMismatch(HodrFatal):
    """The target's tables do not match what the source sends."""
