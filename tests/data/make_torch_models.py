"""Build the small PyTorch models of tests/test_torch_frontend.py and export them, so the tests
run without torch (CI has none): the ONNX files and the `.pt2` are committed beside this script.

    PYTHONPATH=$PWD python tests/data/make_torch_models.py      # needs `pip install edgesparse[torch]`

Fixed seeds; BatchNorm statistics are set to non-trivial values (a freshly built BN is the
identity at inference, which would hide a wrong channel order). The ONNX files are exported the
way edgesparse exports (frontends/torch_export.py), so they are what `.pt2` import sees.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
# (name, builder, per-sample input shape)
MODELS = {
    "torch_cnn": (1, 16, 16),
    "torch_mlp": (20,),
}


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = torch.relu(self.reduce(self.pool(x)))
        return x * torch.sigmoid(self.expand(s))


class TinyCNN(nn.Module):
    """Conv-BN-ReLU stem, a residual block (Add), a depthwise-separable block with squeeze-excite
    (Hardswish), global pooling and a Linear head: the shapes of a mobile classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.pool = nn.MaxPool2d(2)
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False),
                                       nn.BatchNorm2d(16), nn.Hardswish())
        self.se = SqueezeExcite(16, 4)
        self.project = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.pool(x)
        x = self.se(self.depthwise(self.expand(x)))
        x = self.project(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


class TinyMLP(nn.Module):
    def __init__(self, features: int = 20, classes: int = 5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(),
                                 nn.Linear(16, classes), nn.Softmax(dim=1))

    def forward(self, x):
        return self.net(x)


def _with_statistics(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(c, generator=g)
            m.bias.data = 0.1 * torch.randn(c, generator=g)
            m.running_mean = 0.1 * torch.randn(c, generator=g)
            m.running_var = 1 + 0.3 * torch.rand(c, generator=g)
    return model.eval()


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model (eval mode, seeded) and an example input of a batch of 1."""
    torch.manual_seed(0)
    model = {"torch_cnn": TinyCNN, "torch_mlp": TinyMLP}[name]()
    example = torch.randn(1, *MODELS[name], generator=torch.Generator().manual_seed(1))
    return _with_statistics(model, seed=2), example


def main(out: Path = HERE) -> None:
    from edgesparse.frontends.torch_export import export_module

    for name in MODELS:
        model, example = build(name)
        program = torch.export.export(model, (example,))    # the same route as a .pt2 import
        export_module(program.module(), (example,), out / f"{name}.onnx")
        if name == "torch_cnn":
            torch.export.save(program, out / f"{name}.pt2")
    for path in sorted(out.glob("torch_*")):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
