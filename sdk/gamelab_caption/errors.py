"""Typed errors, so callers can tell their own mistakes from ours."""


class ImageError(ValueError):
    """An input image is unusable: not an image, empty, truncated, too large, wrong array."""


class BundleError(ValueError):
    """A model bundle is missing, corrupt, or does not match what the SDK expects."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (a decompression-bomb guard), seen in its header."""


class NotAnImage(ImageError):
    """The input is not in any image format Pillow can read."""


class IndexFileError(ValueError):
    """A game index file is missing, from another format version, or malformed."""


class BatchInputError(ValueError):
    """An input or the output of a batch job is unusable: a missing file or folder, a table
    that cannot be read or has no path column, a glob that matches nothing, or an output
    folder that holds results made with other settings."""


class BatchClusterError(RuntimeError):
    """Ray could not start a local cluster, or not reach the one named by ``address``."""
