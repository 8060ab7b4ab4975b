"""gamelab_caption: edge image captioning on ONNX Runtime."""

from .bundle import Bundle, bundled_models, load_bundle
from .captioner import Captioner, CaptionResult, DecodeOptions
from .errors import BundleError, ImageError, ImageTooLarge, IndexFileError, NotAnImage
from .search import GameHit, GameIndex
from .version import __version__

__all__ = [
    "Bundle",
    "BundleError",
    "CaptionResult",
    "Captioner",
    "DecodeOptions",
    "GameHit",
    "GameIndex",
    "ImageError",
    "ImageTooLarge",
    "IndexFileError",
    "NotAnImage",
    "__version__",
    "bundled_models",
    "load_bundle",
]
