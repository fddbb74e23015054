"""The one exception type for bad input: its message names the file, row or column at
fault and says how to fix it. The CLI prints it and exits non-zero."""


class DataError(ValueError):
    """Bad or missing input data, with a message meant for the person running the job."""
