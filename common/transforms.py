"""Image transforms of the TGN stages: square resize, horizontal flip, and a choice of normalisation."""
from torchvision import transforms as T

NORMALISATIONS = {
    # upstream's Normalize([.5], [.5]) on RGB: pixels in [-1, 1]
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def classification(size: int, train: bool, norm: str = "half", hflip: bool = True):
    """Resize straight to size x size (not aspect-preserving, as upstream), flip when training, normalise."""
    mean, std = NORMALISATIONS[norm]
    steps = [T.Resize((size, size))]
    if train and hflip:
        steps.append(T.RandomHorizontalFlip(0.5))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
