"""Image networks. Each is rebuilt from its checkpoint's plain-dict arguments."""

import torch
from torch import nn


class TutorialCNN(nn.Module):
    """The seed's CIFAR-10 tutorial network: conv 6@5x5, pool, conv 16@5x5, fc 120, 84, n.

    The first fully connected layer is sized from the input, so 28x28 grey works too.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        height: int = 32,
        width: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        if min(height, width) < 16:
            raise ValueError(f"tutorial_cnn needs images of at least 16x16, not {height}x{width}")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = self.features(torch.zeros(1, channels, height, width)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_image_resnet18(
    num_classes: int,
    channels: int = 3,
    height: int = 32,
    width: int = 32,
    dropout: float = 0.0,
) -> nn.Module:
    """torchvision's ResNet-18 adapted to small images: 3x3 stem, no max-pool."""
    # Imported here: torchvision's package import pulls in torch._dynamo and sympy, about
    # 90 MiB in every process that serves or trains any other network.
    from torchvision.models.resnet import BasicBlock, ResNet

    network = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    network.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    network.maxpool = nn.Identity()
    if dropout:
        network.fc = nn.Sequential(nn.Dropout(dropout), network.fc)
    return network


class FastResNet(nn.Module):
    """A ResNet-9/airbench-style network sized for a few CPU cores.

    A 3x3 stem, then three stages that each convolve, halve the resolution with a max-pool
    and add a residual 3x3 convolution: widths w, 2w, 4w. Batch norm and GELU throughout;
    a global max-pool and one linear layer. With w=32 it trains at a few thousand images a
    second on two cores in bfloat16 and channels_last.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        height: int = 32,
        width: int = 32,
        dropout: float = 0.0,
        base_width: int = 32,
    ):
        super().__init__()
        if min(height, width) < 8:
            raise ValueError(f"fast_resnet needs images of at least 8x8, not {height}x{width}")
        widths = (base_width, 2 * base_width, 4 * base_width)
        stem = max(base_width // 2, 16)
        self.stem = conv_bn_gelu(channels, stem)
        self.stages = nn.Sequential(
            FastResNetStage(stem, widths[0]),
            FastResNetStage(widths[0], widths[1]),
            FastResNetStage(widths[1], widths[2]),
        )
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(widths[2], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def conv_bn_gelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
    )


class FastResNetStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )
        self.residual = conv_bn_gelu(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.residual(x)
