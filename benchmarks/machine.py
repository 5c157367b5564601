"""What a benchmark prints about the machine it ran on: the CPU, its cores and the load beside it."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line: CPU model, core count, load average (1, 5, 15 min)."""
    return f"CPU: {cpu_model()} | {os.cpu_count()} cores | load average (1, 5, 15 min) {load_average()}"
