"""Errors that mean "the input is wrong", reported to the user as one clear line, never as a traceback."""


class InputError(ValueError):
    """Bad input: a file, request, parameter or configuration that cannot be used as given."""


class DataError(InputError):
    """Input data that is missing, corrupt or inconsistent."""
