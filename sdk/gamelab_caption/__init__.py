"""gamelab_caption: edge image captioning on ONNX Runtime."""

from .bundle import Bundle, bundled_models, load_bundle
from .captioner import Captioner, CaptionResult
from .errors import BundleError, ImageError
from .version import __version__

__all__ = [
    "Bundle",
    "BundleError",
    "CaptionResult",
    "Captioner",
    "ImageError",
    "__version__",
    "bundled_models",
    "load_bundle",
]
