"""One base class for problems a user can fix (bad input, settings, missing model): shown without a traceback."""


class TleditError(Exception):
    """A user-facing error; the message names the shard, document, file or setting and the problem."""
