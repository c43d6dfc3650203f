"""A description of the machine a benchmark or evaluation ran on, stored with its results."""

from __future__ import annotations

import os
import platform

import torch
import torchvision


def load_average() -> float | None:
    """The 1-minute load average; None where the OS has none (Windows) or will not tell."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # os.getloadavg is absent on Windows
        return None


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bfloat16 instructions that oneDNN uses (AVX512-BF16, AMX, or
    Arm's BF16). Without them bf16 autocast on the CPU is emulated: a G.pt training step
    took 9.2 s instead of 0.59 s in float32 on an AMD EPYC with AVX2 only
    (benchmarks/results/gpt_train_amd_epyc.json)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN: no fast bf16 path either
        return False


def machine() -> dict[str, object]:
    """CPU model, cores, torch threads, native bf16 support, library versions, GPU and the
    1-minute load average (development machines are shared: how busy they were explains
    slow wall times; None where the OS reports none, e.g. Windows)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass  # not Linux: keep platform.processor()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1min": load_average(),
    }
