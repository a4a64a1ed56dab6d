"""The exceptions the core raises. Callers catch `YoloTrtError` at their boundary."""


class YoloTrtError(Exception):
    """Base of every error this package raises on purpose."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a YAML parser's runs over several), without a
    closing full stop; its type's name where it has no message."""
    return ' '.join(str(exc).split()).rstrip('.') or type(exc).__name__


class ImageError(YoloTrtError):
    """An image buffer cannot be read: unknown encoding, wrong size, empty, corrupt.

    cause: a short stable key ('encoding', 'size', 'empty', 'decode', ...) for counting.
    """

    def __init__(self, message: str, cause: str = 'image') -> None:
        super().__init__(message)
        self.cause = cause


class ModelError(YoloTrtError):
    """A model file is missing, unreadable, or has a layout we cannot decode."""


class LabelsError(YoloTrtError):
    """A labels file is missing, malformed, or disagrees with the model's class count."""


class BackendError(YoloTrtError):
    """An inference backend is unavailable or failed."""


class CudaError(BackendError):
    """A CUDA runtime call returned an error code."""


class EngineError(YoloTrtError):
    """A TensorRT engine cannot be built, found, trusted or loaded."""


class Cancelled(EngineError):
    """A build stopped on request (a signal): nothing was written."""


class AssetError(YoloTrtError):
    """A downloaded asset is missing or does not match its pinned hash."""


class OutputError(YoloTrtError):
    """One image's model output cannot be trusted (NaN mask values, an angle outside any
    sane range): that frame is refused, the others in its batch are served.

    cause: a short stable key for counting ('bad_output')."""

    cause = 'bad_output'
