"""The data layer: reading images, image-folder and split-file data sets, the few shots.

Everything here raises ``ddcore.errors.DataError`` (a one-line message with the fix) for
problems a user can cause.
"""

from ddcore.data.digits import ensure_digits
from ddcore.data.fewshot import fewshot_digest, load_fewshot, sample_fewshot, save_fewshot
from ddcore.data.folders import load_image_folder
from ddcore.data.images import IMAGE_EXTENSIONS, is_image_file, load_rgb
from ddcore.data.splits import load_split_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "ensure_digits",
    "fewshot_digest",
    "is_image_file",
    "load_fewshot",
    "load_image_folder",
    "load_rgb",
    "load_split_file",
    "sample_fewshot",
    "save_fewshot",
]
