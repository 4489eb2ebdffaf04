"""Image networks. Each is rebuilt from its checkpoint's plain-dict arguments."""

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


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


class SmallImageResNet18(ResNet):
    """torchvision's ResNet-18 adapted to small images: 3x3 stem, no max-pool."""

    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        height: int = 32,
        width: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        if dropout:
            self.fc = nn.Sequential(nn.Dropout(dropout), self.fc)
