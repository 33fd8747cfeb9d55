"""Errors a user can cause. The CLI prints them as one line; the API answers with the status each class names."""


class UserError(Exception):
    """Something the user can fix: the message says what and how. A subclass names its own HTTP
    status (and, for "try again later", the seconds to wait) so the API maps it without knowing it."""

    http_status = 400
    retry_after: int | None = None  # seconds, sent as Retry-After


class ConfigError(UserError):
    pass


class VaultNotFound(UserError):
    pass
