"""Errors the user can act on. The CLI prints them as one line and exits 2."""


class StudyError(Exception):
    """Base class: a message naming the file or field and what was expected."""


class ConfigError(StudyError, ValueError):
    """A configuration value (model knob, variant field, profile) is invalid."""


class DataError(StudyError):
    """A dataset root, file or pair is missing, unreadable or malformed."""
