class HarnessError(Exception):
    """A user-facing error: bad input, a bad protocol file or missing data.

    The CLI prints its message (which names the bad field, value or file) and exits 2.
    Raised before anything is written, so a failed command leaves no partial output.
    """
