"""Errors that mean "the input is wrong", reported to the user as one clear line, never as a traceback."""


class InputError(ValueError):
    """Bad input: a file, request, parameter or configuration that cannot be used as given."""


class DataError(InputError):
    """Input data that is missing, corrupt or inconsistent."""


def validation_problems(errors: list[dict]) -> str:
    """pydantic's ValidationError.errors() as one line: 'field.path: message; ...'."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in errors)
