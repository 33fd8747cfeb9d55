"""Errors a user can cause. The CLI prints them as one line; the API maps them to 4xx."""


class UserError(Exception):
    """Something the user can fix: the message says what and how."""


class ConfigError(UserError):
    pass


class VaultNotFound(UserError):
    pass
