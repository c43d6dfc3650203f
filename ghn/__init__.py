"""ghn: predict every parameter of any PyTorch model in one forward pass."""

__version__ = "0.1.0"
