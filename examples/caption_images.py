"""Caption every image given on the command line with the bundled default model.

python examples/caption_images.py examples/images/*.jpg
"""

import sys

from gamelab_caption import Captioner

captioner = Captioner()  # the bundled INT8 model, on CPU unless onnxruntime-gpu is installed
for path, result in zip(sys.argv[1:], captioner.caption_batch(sys.argv[1:]), strict=True):
    print(f"{path}: {result.text if result.error is None else result.error}")
