from PIL import Image
from . import functional  # noqa: F401


class ToTensor:
    def __call__(self, pic):
        return functional.to_tensor(pic)


class ToPILImage:
    def __call__(self, t):
        if t.is_floating_point():
            t = t.mul(255).byte()
        arr = t.permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(arr if arr.shape[2] != 1 else arr[:, :, 0])


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x
