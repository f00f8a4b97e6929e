"""Errors that the CLI reports as one clear line (exit status 2) instead of a traceback."""


class CapeError(Exception):
    """Base class: bad input or a refused operation, with a message naming file/row/column/option."""


class DataError(CapeError, ValueError):
    """A table or prompt file is malformed; the message names the file, row and column."""


class OptionError(CapeError, ValueError):
    """An option has an invalid value; the message names the option."""


class StoreError(CapeError):
    """The HDF5 store refused an operation (e.g. overwriting different content without --force)."""


class SchemaError(CapeError):
    """A stored result does not match its class; the message names the group and the field."""
