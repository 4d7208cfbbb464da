"""VariReal's object masks: SAM prompted with the image centre, supplied masks made square
like their shot, a mask grown by some pixels, and the file name of a shot's mask."""

from __future__ import annotations

from pathlib import Path


from .img2img import square_source

DEFAULT_SEGMENTER = "facebook/sam-vit-base"
MASKS_DIR = "varireal-masks"


def dilate(mask, pixels: int):
    """``mask`` (bool array) grown by ``pixels`` in every direction (a square structuring element)."""
    import numpy as np
    from PIL import Image, ImageFilter

    if pixels <= 0:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.filter(ImageFilter.MaxFilter(2 * pixels + 1))) > 127


def square_mask(image, resolution: int, fit: str):
    """A mask image made square and resized like its source (``square_source``), as a bool
    array (white = object)."""
    import numpy as np

    return np.asarray(square_source(image.convert("L"), resolution, fit)) > 127


class SamSegmenter:
    """A transformers SAM prompted with one point, the image centre; the mask with the highest
    predicted IoU of SAM's three is kept."""

    def __init__(self, spec: str, device: str) -> None:
        def tiny():
            from ddcore.api import tiny_sam

            return tiny_sam()

        def load(source, **kwargs):
            from transformers import SamModel, SamProcessor

            processor = SamProcessor.from_pretrained(source, **kwargs)
            return SamModel.from_pretrained(source, **kwargs), processor

        from ddcore.api import load_pretrained

        (model, self.processor), self.identity = load_pretrained(
            spec, what="segmentation model (SAM)", use="--set generator.segmenter=DIR", tiny=tiny, load=load)
        self.model, self.device = model.to(device).eval(), device

    def object_mask(self, image):
        """Bool array (height, width): True on the object under the centre point."""
        import torch

        width, height = image.size
        inputs = self.processor(images=image, input_points=[[[width / 2, height / 2]]], return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        pixel_values = inputs["pixel_values"].to(self.device, dtype=dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixel_values, input_points=inputs["input_points"].to(self.device),
                             multimask_output=True)
        masks = self.processor.post_process_masks(out.pred_masks.float().cpu(), inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])[0]  # [points, 3, H, W]
        best = int(out.iou_scores[0, 0].float().argmax())
        return masks[0, best].numpy().astype(bool)


def relative_mask_name(path: Path, root: Path | None) -> Path:
    """``path`` relative to the data root (its name alone when outside it), with ``.png``."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).with_suffix(".png")
        except ValueError:
            pass
    return Path(path.name).with_suffix(".png")
