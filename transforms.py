"""The release's image transforms (its datasets.py), on PIL images and NumPy arrays: the training
augmentation and the validation resize + center crop, both ending in ImageNet normalisation.

PIL in, float32 CHW out. The operations, parameters and probabilities are the release's (it used
paddle.vision.transforms); the individual random draws differ, the distributions do not.
"""
import math
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from config import ConfigError


class RandomApply:
    """Apply `transform` with probability p.

    The release's helper compared the other way round (`if p < random()`), so its 'p' transforms
    ran with probability 1 - p; `release_inverted=True` reproduces that (DATA.RELEASE_RANDOM_APPLY).
    """

    def __init__(self, transform, p, release_inverted=False):
        self.transform, self.p, self.release_inverted = transform, p, release_inverted

    def __call__(self, img):
        draw = random.random()
        run = draw > self.p if self.release_inverted else draw < self.p
        return self.transform(img) if run else img


class RandomRotation:
    """Rotate by an angle drawn uniformly from [-degrees, degrees] (nearest neighbour, corners black)."""
    def __init__(self, degrees):
        self.degrees = degrees

    def __call__(self, img):
        # Nearest-neighbour, as Paddle's/torchvision's RandomRotation default that the release used.
        return img.rotate(random.uniform(-self.degrees, self.degrees), resample=Image.NEAREST)


class RandomResizedCrop:
    """Crop a random area fraction (scale) with aspect ratio in `ratio`, resized to size x size."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(1.0, 1.0), interpolation=Image.BICUBIC):
        self.size, self.scale, self.ratio, self.interpolation = size, scale, ratio, interpolation

    def _box(self, width, height):
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, width - w), random.randint(0, height - h), w, h
        side = min(width, height)   # fall back to the centre square
        return (width - side) // 2, (height - side) // 2, side, side

    def __call__(self, img):
        x, y, w, h = self._box(*img.size)
        return img.crop((x, y, x + w, y + h)).resize((self.size, self.size), self.interpolation)


class RandomHorizontalFlip:
    """Mirror the image left-right with probability 0.5."""
    def __call__(self, img):
        return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < 0.5 else img


class Grayscale:
    """Grey image in three identical channels."""
    def __call__(self, img):
        return img.convert('L').convert('RGB')


class ColorJitter:
    """Brightness, contrast, saturation factors drawn from [1-s, 1+s], applied in random order."""

    def __init__(self, brightness, contrast, saturation):
        self.strengths = (brightness, contrast, saturation)

    def __call__(self, img):
        enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
        order = list(range(3))
        random.shuffle(order)
        for i in order:
            s = self.strengths[i]
            if s > 0:
                img = enhancers[i](img).enhance(random.uniform(max(0.0, 1 - s), 1 + s))
        return img


class GaussianBlur:
    """Gaussian blur with a radius drawn uniformly from `sigma`."""
    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class Resize:
    """Resize the shorter side to `size`."""

    def __init__(self, size, interpolation=Image.BICUBIC):
        self.size, self.interpolation = size, interpolation

    def __call__(self, img):
        w, h = img.size
        if min(w, h) == self.size:
            return img
        if w <= h:
            new = (self.size, max(1, int(self.size * h / w)))
        else:
            new = (max(1, int(self.size * w / h)), self.size)
        return img.resize(new, self.interpolation)


class CenterCrop:
    """The central size x size square."""
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        w, h = img.size
        left, top = int(round((w - self.size) / 2)), int(round((h - self.size) / 2))
        return img.crop((left, top, left + self.size, top + self.size))


class ToNormalizedArray:
    """PIL RGB -> float32 CHW, scaled to [0, 1] then normalised with mean/std."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __call__(self, img):
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (arr - self.mean) / self.std


class RandomErasing:
    """With probability `prob`, erase 1..max_count rectangles (the count drawn uniformly, each
    rectangle's area 2%-1/3 of the image divided by the count, log-uniform aspect 0.3-3.3) of a
    normalised CHW array, as the release's random_erasing.py did; mode 'pixel' fills with
    per-pixel normal noise, 'rand' with one normal value per channel, 'const' with zeros."""

    MODES = ('const', 'rand', 'pixel')

    def __init__(self, prob, mode='pixel', max_count=1, min_count=1, min_area=0.02, max_area=1 / 3,
                 min_aspect=0.3):
        self.mode = (mode or 'const').lower()
        if self.mode not in self.MODES:
            raise ConfigError(f"TRAIN.RANDOM_ERASE_MODE '{mode}': choose one of {', '.join(self.MODES)}")
        self.prob, self.min_count, self.max_count = prob, min_count, max(min_count, max_count or min_count)
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, arr):
        if self.prob <= 0 or random.random() > self.prob:
            return arr
        channels, height, width = arr.shape
        area = height * width
        count = (self.min_count if self.min_count == self.max_count
                 else random.randint(self.min_count, self.max_count))
        for _ in range(count):
            for _attempt in range(10):
                target = random.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(random.uniform(*self.log_aspect))
                h = int(round(math.sqrt(target * aspect)))
                w = int(round(math.sqrt(target / aspect)))
                if w < width and h < height:
                    top, left = random.randint(0, height - h), random.randint(0, width - w)
                    if self.mode == 'pixel':
                        fill = np.random.normal(size=(channels, h, w))
                    elif self.mode == 'rand':
                        fill = np.random.normal(size=(channels, 1, 1))
                    else:
                        fill = 0.0
                    arr[:, top:top + h, left:left + w] = fill
                    break
        return arr


class Compose:
    """Apply transforms one after the other."""
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


def train_transform(config):
    """The release's training augmentation (its datasets.py), with its random-apply comparison
    unless DATA.RELEASE_RANDOM_APPLY is False."""
    size = config.DATA.IMAGE_SIZE
    inverted = bool(config.DATA.RELEASE_RANDOM_APPLY)
    mean, std = config.DATA.IMAGENET_MEAN, config.DATA.IMAGENET_STD
    return Compose([
        RandomApply(RandomRotation(6), 0.5, inverted),
        RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(1.0, 1.0), interpolation=Image.BICUBIC),
        RandomHorizontalFlip(),
        RandomApply(Grayscale(), 0.2, inverted),
        RandomApply(ColorJitter(0.4, 0.4, 0.4), 0.8, inverted),
        RandomApply(GaussianBlur((0.1, 2.0)), 0.5, inverted),
        ToNormalizedArray(mean, std),
        RandomErasing(config.TRAIN.RANDOM_ERASE_PROB, config.TRAIN.RANDOM_ERASE_MODE,
                      max_count=config.TRAIN.RANDOM_ERASE_COUNT),
    ])


def val_transform(config):
    """The release's validation transform: resize to floor(size / CROP_PCT), center crop, normalise."""
    size = config.DATA.IMAGE_SIZE
    return Compose([
        Resize(int(math.floor(size / config.DATA.CROP_PCT)), Image.BICUBIC),
        CenterCrop(size),
        ToNormalizedArray(config.DATA.IMAGENET_MEAN, config.DATA.IMAGENET_STD),
    ])
