"""Shared helpers of the benchmarks: the machine, medians, timing, small specs."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only (no GPU)"
    cpu = platform.processor() or platform.machine()
    return (f"machine: {os.cpu_count()} cores ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, device: {device}, Python {platform.python_version()}")


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    return f"median {median(values):.3g} (runs: {', '.join(f'{v:.3g}' for v in values)})"


class Timer:
    def __enter__(self):
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.began


def header(title: str, command: str) -> None:
    print(f"== {title}")
    print(f"command: {command}")
    print(machine())
    print(flush=True)


class NullObserver:
    def records_changed(self, records, checkpoint_dir) -> None:
        pass


def cifar_available() -> bool:
    return (SHARED_DATA / "cifar10" / "train.parquet").is_file()
