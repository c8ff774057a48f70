"""Errors the user can act on. The CLI prints them as one line and exits 2."""


class StudyError(Exception):
    """Base class: a message naming the file or field and what was expected."""


class ConfigError(StudyError, ValueError):
    """A configuration value (model knob, variant field, profile) is invalid."""


class DataError(StudyError):
    """A dataset root, file or pair is missing, unreadable or malformed."""


def did_you_mean(name: str, known) -> str:
    """" (did you mean 'table3'?)" for a misspelt name close to a known one, else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
