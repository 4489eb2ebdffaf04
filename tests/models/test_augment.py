import torch

from models.augment import ImageAugmentation, random_crop


def numbered_images(count: int = 6, channels: int = 3, size: int = 8) -> torch.Tensor:
    values = torch.arange(count * channels * size * size) % 250 + 1  # no zeros: padding shows
    return values.reshape(count, channels, size, size).to(torch.uint8)


def test_defaults_follow_the_input_size_and_colour():
    assert ImageAugmentation.default_for(3, 32, 32) == ImageAugmentation(4, True)
    assert ImageAugmentation.default_for(1, 28, 28) == ImageAugmentation(2, False)  # digits
    assert ImageAugmentation(0, False).is_identity


def test_random_crop_shifts_each_image_within_the_padding():
    images = numbered_images()
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = [(dy, dx) for dy in range(5) for dx in range(5)]
    for image, original in zip(cropped, padded, strict=True):
        matches = [
            (dy, dx) for dy, dx in offsets if torch.equal(image, original[:, dy:, dx:][:, :8, :8])
        ]
        assert len(matches) == 1
    shifted = [bool((c == 0).any()) for c in cropped]
    assert any(shifted)  # some images moved and show the zero padding


def test_flip_mirrors_some_images_and_leaves_the_others():
    images = numbered_images(count=32)
    flipped = ImageAugmentation(0, True)(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, i.flip(2)) for f, i in zip(flipped, images, strict=True)]
    same = [torch.equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert 0 < sum(mirrored) < 32


def test_same_generator_seed_gives_the_same_augmentation():
    images, augment = numbered_images(), ImageAugmentation(3, True)
    first = augment(images, torch.Generator().manual_seed(5))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(6)))
