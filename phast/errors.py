"""Every exception phast raises, in one place.

Each class says who raises it. All derive from :class:`PhastError` and from the builtin they
specialise, so ``except ValueError`` and ``except FileNotFoundError`` keep working for callers that
do not know phast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


class PhastError(Exception):
    """Base class of every phast error."""


class SourceNotFound(PhastError, FileNotFoundError):
    """Raised by :func:`phast.open` when the path does not exist or is not a regular file."""


class MediaError(PhastError, ValueError):
    """Raised when a source is not a usable video: not a media file, damaged, truncated.

    Also the base class of the more specific media errors below.
    """


class NoVideoStream(MediaError):
    """Raised by :func:`phast.open` when the source has no video stream (or not the one asked)."""


class UnsupportedCodec(MediaError):
    """Raised by :func:`phast.open` when no available backend can decode the stream's codec."""


class DecodeError(MediaError):
    """Raised by ``Clip.frame`` when the requested frame cannot be decoded from this source.

    The source is damaged around that frame; other frames may still decode.
    """


class FrameOutOfRange(PhastError, IndexError):
    """Raised by ``Clip.frame``/``Clip.frame_at`` for an index or time outside the clip."""


class InvalidArgument(PhastError, ValueError):
    """Raised for a bad argument (unknown format, negative deadline, wrong type...)."""


class BackendNotFound(PhastError, ValueError):
    """Raised by :func:`phast.open` for a backend name that no registry entry provides."""


class BackendUnavailable(PhastError, RuntimeError):
    """Raised when a named backend cannot run on this host (its probe said why)."""


class CannotHandle(PhastError):
    """Raised by a backend's ``open`` to say "this input is not for me" (not "I am broken").

    The selector then tries the next backend and records the reason; any other exception from a
    backend propagates.
    """


class MissingDependency(PhastError, ImportError):
    """Raised at use (never at import) when an optional library is missing; names the extra."""


class MeterUnavailable(PhastError, OSError):
    """Raised by :func:`phast.power.open_meter` when the asked power meter cannot run here.

    No powercap RAPL zone, no NVIDIA GPU, a driver that fails to answer; the message says which
    and what to use instead (``--meter cpu`` always works).
    """


class MeterPermissionDenied(MeterUnavailable, PermissionError):
    """Raised when a RAPL ``energy_uj`` counter is readable by root only (mode 0400).

    The message says how to fix it: run as root, grant read access with a udev rule or chmod,
    or use the CPU-time model (``--meter cpu``).
    """


class KernelUnavailable(PhastError, RuntimeError):
    """Raised by a ``phast.kernels`` runner whose library is installed but finds no device.

    (A missing library is :class:`MissingDependency`.) The message says what was looked for.
    """


class ClipClosed(PhastError, ValueError):
    """Raised by any ``Clip`` method called after ``close()``."""


class WorkerCrashed(PhastError, RuntimeError):
    """Raised when a worker died and the supervisor could not recover the request.

    The message carries the exit code or the signal.
    """


class WorkerHung(WorkerCrashed):
    """A worker stopped answering (no heartbeat within the watchdog timeout) and was killed."""


class DeviceError(PhastError, RuntimeError):
    """Raised inside a worker by a backend whose GPU call failed (a CUDA or decoder error).

    The worker's device context may be poisoned: the worker reports it with its own record type
    and exits, and the editor restarts it (never a retry in the same process).
    """


class WorkerStartError(PhastError, RuntimeError):
    """Raised when a worker process does not complete its READY handshake in time."""


class ProtocolViolation(PhastError, RuntimeError):
    """A worker sent a record that does not match its job or the clip; the worker is killed.

    Never reaches the caller on its own: it is handled like a crash (restart, retry, quarantine).
    """


class FrameQuarantined(PhastError, RuntimeError):
    """Raised by ``Clip.frame`` for a frame that made workers fail twice.

    phast stops asking workers for it (for the life of the clip) instead of crash-looping.
    """


class SlotTooSmall(PhastError, BufferError):
    """Raised by a backend's ``decode`` (and ``backends.base.write_planes``) when the output
    buffer is smaller than the frame needs, before anything is written.

    ``needed`` is the number of bytes the frame needs in the requested format. Never reaches
    the caller: the worker reports it with its own record type and the editor grants a bigger
    slot for the same frame.
    """

    def __init__(self, needed: int) -> None:
        super().__init__(f"frame needs {needed} bytes")
        self.needed = needed


class SlotsExhausted(PhastError, RuntimeError):
    """Raised when every shared-memory slot of a clip is leased by a live ``Frame``/array.

    Release frames (``Frame.release()``, ``with clip.frame(i) as f``) or keep copies
    (``Frame.copy()``) for long-lived use.
    """


class IndexMismatch(PhastError, RuntimeError):
    """Raised inside a worker when decoded frames disagree with the frame index.

    The supervisor answers by rebuilding the index with a full decode pass, then retries.
    """


class ProxyBuildFailed(PhastError, RuntimeError):
    """Raised by a proxy farm's task (:mod:`phast.farm`) when some of its frames could not be
    built; ``frames`` lists them (Dask retries the task, then the farm reports them)."""

    def __init__(self, message: str, frames: tuple[int, ...] = ()) -> None:
        super().__init__(message, tuple(frames))  # both in args: survives pickling
        self.frames = tuple(frames)

    def __str__(self) -> str:
        return str(self.args[0])


def _import_extra(module: str, needed_for: str, extra: str) -> Any:
    """``import module``, or :class:`MissingDependency` naming the extra that installs it
    (phast's optional extras are imported at use, never at ``import phast``)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{needed_for}: pip install 'phast[{extra}]'") from e


#: Error types a worker may name in an error record, mapped to the class raised in the editor.
#: A name outside this table becomes a :class:`DecodeError` (the worker is not trusted to pick).
WORKER_ERROR_TYPES: dict[str, type[PhastError]] = {
    cls.__name__: cls
    for cls in (
        SourceNotFound,
        MediaError,
        NoVideoStream,
        UnsupportedCodec,
        DecodeError,
        FrameOutOfRange,
        InvalidArgument,
        CannotHandle,
        MissingDependency,
        IndexMismatch,
        BackendUnavailable,
        KernelUnavailable,
    )
}
