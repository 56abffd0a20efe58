"""Shared helpers of the benchmarks: timing, environment facts, atomic JSON + markdown output."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import scp_core  # noqa: E402,F401  (first: the torchvision shim before diffusers)
import torch  # noqa: E402

from scp_core.io import write_json, write_text  # noqa: E402

OUT = ROOT / "reports" / "bench"
QUICK_OUT = ROOT / "reports" / "_scratch" / "bench"  # git-ignored: --quick never overwrites committed results


def timed(fn, *args, **kw) -> tuple[float, object]:
    """``(seconds, result)`` of one call (wall clock, ``perf_counter``)."""
    t = time.perf_counter()
    r = fn(*args, **kw)
    return time.perf_counter() - t, r


def median(xs) -> float:
    return float(statistics.median(xs))


def other_load() -> list[str]:
    """Other busy processes (average CPU > 10 % over their life, or any scp_core / pytest run): they share the CPU."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--no-headers"], capture_output=True, text=True).stdout
    except OSError:
        return []
    me = os.getpid()
    busy = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, ppid, pcpu, args = int(parts[0]), int(parts[1]), float(parts[2]), parts[3]
        if me in (pid, ppid) or args.startswith(("ps ", "[")):
            continue
        if pcpu > 10 or "scp_core" in args or "pytest" in args:
            busy.append(f"{pid} ({pcpu:.0f} % CPU) {args}")
    return busy


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


START = {"load_average": load_average(), "busy_processes": other_load()}


def environment(device: str = "cpu") -> dict:
    """Facts a reader needs to compare numbers: versions, threads, CPU, concurrent load."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": cpu,
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "git_commit": commit,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "load_average_start": START["load_average"], "load_average_end": load_average(),
           "concurrent_project_processes": sorted(set(START["busy_processes"]) | set(other_load()))}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def md_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table of dicts (floats with 4 significant digits)."""
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, sections: list[tuple[str, str]], data: dict, out: Path = OUT) -> str:
    """Print the markdown report and write ``<out>/<name>.md`` and ``<out>/<name>.json`` atomically.

    Args:
        sections: ``(heading, markdown body)`` pairs (tables and notes).
        data: everything measured, for the JSON file (``environment`` is added here).
    """
    env = data.setdefault("environment", environment(data.get("device", "cpu")))
    parts = [f"# {title}", "", f"Command: `{data['command']}`", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    load = env["concurrent_project_processes"]
    parts += ["## Environment", "",
              f"torch {env['torch']}, {env['torch_threads']} thread(s), {env['cpu_count']} CPU core(s) ({env['cpu']}), "
              f"device {env['device']}{' (' + env['gpu'] + ')' if env.get('gpu') else ''}, commit {env['git_commit']}, "
              f"{env['date']}.",
              ("Other busy processes at the start or the end of the measurement (they compete for the CPU): "
               + "; ".join(f"`{l[:120]}`" for l in load)) if load else
              "No other busy process at the start or the end of the measurement.",
              f"Load average (1, 5, 15 min) at the start: {env['load_average_start']}; at the end: "
              f"{env['load_average_end']}.", ""]
    text = "\n".join(parts)
    print(text)
    write_json(out / f"{name}.json", data)
    write_text(out / f"{name}.md", text)
    return text


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
