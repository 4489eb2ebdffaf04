"""Image augmentation on batches of uint8 tensors: random crop after padding, horizontal flip.

It runs on whole batches where the images already are (CPU or GPU), before normalisation,
so training never goes back to decoding files.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional


@dataclass(frozen=True)
class ImageAugmentation:
    crop_padding: int = 0  # pixels of zero padding; each image is shifted by up to this much
    horizontal_flip: bool = False

    @classmethod
    def default_for(cls, channels: int, height: int, width: int) -> "ImageAugmentation":
        """Shifts of 1/8 of the side for colour photos (4 px at 32x32) and a horizontal flip;
        grey images (digits, letters) get 1/14 (2 px at 28x28) and no flip: a mirrored
        digit is another shape."""
        side = min(height, width)
        if channels == 1:
            return cls(crop_padding=side // 14, horizontal_flip=False)
        return cls(crop_padding=side // 8, horizontal_flip=True)

    @property
    def is_identity(self) -> bool:
        return not self.crop_padding and not self.horizontal_flip

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 N,C,H,W in, same shape out; `generator` lives on the CPU (shared by devices)."""
        if self.crop_padding:
            batch = random_crop(batch, self.crop_padding, generator)
        if self.horizontal_flip:
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(flip.to(batch.device).view(-1, 1, 1, 1), batch.flip(3), batch)
        return batch


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator | None):
    """Each image shifted by its own (dy, dx) in [-padding, padding]; uncovered pixels are 0."""
    count, channels, height, width = batch.shape
    padded = functional.pad(batch, (padding,) * 4)
    shifts = torch.randint(0, 2 * padding + 1, (2, count, 1), generator=generator)
    shifts = shifts.to(batch.device)
    rows = shifts[0] + torch.arange(height, device=batch.device)  # N,H
    cols = shifts[1] + torch.arange(width, device=batch.device)  # N,W
    images = torch.arange(count, device=batch.device).view(-1, 1, 1, 1)
    planes = torch.arange(channels, device=batch.device).view(1, -1, 1, 1)
    return padded[images, planes, rows[:, None, :, None], cols[:, None, None, :]]
