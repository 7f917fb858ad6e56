"""User-facing errors: one paragraph that says what is wrong and what to do.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class GptbenchError(Exception):
    """An error caused by input (a spec, a file, a flag), explained for the user."""


class SpecError(GptbenchError):
    pass


class WeightsError(GptbenchError):
    pass


class DataError(GptbenchError):
    pass


class BackendError(GptbenchError):
    pass
