"""What machine a benchmark ran on, saved with every result file."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and "cpu" not in info:
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and "cpu_isa" not in info:
                # The vector extensions that decide CPU speed (and whether half precision is native).
                flags = set(line.split(":", 1)[1].split())
                info["cpu_isa"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"})
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info
