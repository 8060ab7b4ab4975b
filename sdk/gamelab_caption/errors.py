"""Typed errors, so callers can tell their own mistakes from ours."""


class ImageError(ValueError):
    """An input image is unusable: not an image, empty, truncated, too large, wrong array."""


class BundleError(ValueError):
    """A model bundle is missing, corrupt, or does not match what the SDK expects."""
