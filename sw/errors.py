"""The project's error hierarchy: one base for every error a user can cause.

The command line catches :class:`OpenRDUError` alone and prints its message as
one line; any other exception is a bug in OpenRDU and keeps its traceback.
Each class also derives from the built-in exception it used to be, so code
that catches ``ValueError`` or ``RuntimeError`` keeps working.

- :class:`CheckpointError`: a checkpoint folder that is missing, unreadable,
  malformed or inconsistent (config.json, weights, tokenizer).
- :class:`UnsupportedModelError`: a well-formed checkpoint of an architecture,
  op or setting the compiler does not implement.
- :class:`CompileError`: a model the target cannot run (fit errors name the
  resource, needed and available).
- :class:`ProgramFormatError`: a compiled-program file that is corrupt, of
  another format version, or not a program at all.
- :class:`TargetError`: a chip target description with a bad field.
- :class:`DecodeError`: a request the compiled model cannot serve.
- :class:`ChipError`: the chip (RTL or fast model) refused or failed a command.
- :class:`LaunchError`: a launch that does not match its kernel (a :class:`ChipError`).
- :class:`SimulationError`: the co-simulation failed or ended without a result.
- :class:`SweepSpecError`: a sweep spec that cannot be read or has a bad field.
- :class:`CoEError`: an expert library, request file or CoE setting the controller cannot serve.
"""


class OpenRDUError(Exception):
    """Base of every user-facing error; its message is one line that names the problem and where."""


class CheckpointError(OpenRDUError, ValueError):
    """A checkpoint folder that is missing, unreadable, malformed or inconsistent."""


class UnsupportedModelError(OpenRDUError, ValueError):
    """A well-formed checkpoint of an architecture, op or setting the compiler does not implement."""


class CompileError(OpenRDUError, ValueError):
    """A model the target cannot run; the message names the op, the resource, needed and available."""


class ProgramFormatError(CompileError):
    """A compiled-program file that is corrupt, of another format version, or not a program; names the file."""


class TargetError(OpenRDUError, ValueError):
    """A chip target description with a missing or bad field; the message names the field."""


class DecodeError(OpenRDUError, ValueError):
    """A request the compiled model cannot serve: the message says which limit and by how much."""


class ChipError(OpenRDUError, RuntimeError):
    """The chip refused or failed a command; the message says which and why."""


class LaunchError(ChipError, ValueError):
    """A launch that does not match its kernel: a host port without a pattern, a pattern longer than its data."""


class SimulationError(OpenRDUError, RuntimeError):
    """The co-simulation failed or ended without a result; the message names its log."""


class SweepSpecError(OpenRDUError, ValueError):
    """A sweep spec that cannot be read or has a bad field; the message names the file and the field."""


class CoEError(OpenRDUError, ValueError):
    """An expert library, request or Composition-of-Experts setting the controller cannot serve; names which."""
