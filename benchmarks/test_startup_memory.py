"""Cold start and memory: a fresh Python process that imports the SDK and captions one image.

The benchmark's time is from starting the process to reading its first caption (interpreter
start-up, imports, loading and checking the bundle, one beam-3 caption); the process then
exits outside the timed part. The child reports its own peak RSS and the time it spent
importing, loading and captioning. Peak RSS is VmHWM from /proc/self/status: ``ru_maxrss``
would do elsewhere, but on Linux it keeps the parent's RSS across fork and exec, so a child
of a big pytest process would report the parent's size. Warm-up: one process first, so every timed
process finds the files in the page cache, as a service restarting on a device would.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

CHILD = """
import json, os, resource, sys, time
started = time.perf_counter()

def since_process_start():
    try:
        with open("/proc/self/stat") as stat:  # field 22: start time in clock ticks
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            return float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None

python_start = since_process_start()

def peak_rss_kib():
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

from gamelab_caption import Captioner
imported = time.perf_counter()
import_rss = peak_rss_kib()
threads = None if sys.argv[3] == "default" else int(sys.argv[3])
captioner = Captioner(sys.argv[1], threads=threads, providers=["CPUExecutionProvider"])
loaded = time.perf_counter()
text = captioner.caption(sys.argv[2], beam_size=3).text
captioned = time.perf_counter()
print(json.dumps({
    "python_start_s": python_start,
    "import_s": imported - started,
    "load_s": loaded - imported,
    "caption_s": captioned - loaded,
    "import_rss_kib": import_rss,
    "peak_rss_kib": peak_rss_kib(),
    "text": text,
}), flush=True)
"""
KIB = 1024 / 1e6  # the child reports KiB; we report MB (10^6 bytes)


def _median(reports: list[dict], key: str) -> float | None:
    values = [r[key] for r in reports if r[key] is not None]
    return round(float(np.median(values)), 3) if values else None


def test_fresh_process(benchmark, bundle, settings, images, record):
    reports, processes = [], []
    # Captioner() as users create it: ONNX Runtime chooses the threads.
    command = [sys.executable, "-c", CHILD, str(bundle.path), str(images.paths[0]), "default"]

    def first_caption():
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        processes.append(process)
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the child printed nothing: {process.communicate()[1][-2000:]}")
        reports.append(json.loads(line))

    def finish():
        processes[-1].communicate()  # let it exit, outside the timed part

    benchmark.pedantic(first_caption, teardown=finish, rounds=settings.starts, warmup_rounds=1)
    timed = reports[1:] or reports  # the first was the warm-up (none: --benchmark-disable)
    record(
        benchmark,
        "fresh process",
        kind="startup",
        **bundle.fields,
        beam=3,
        batch=1,
        threads=None,
        peak_rss_mb=round(max(r["peak_rss_kib"] for r in timed) * KIB, 1),
        import_rss_mb=round(max(r["import_rss_kib"] for r in timed) * KIB, 1),
        python_start_s=_median(timed, "python_start_s"),
        import_s=_median(timed, "import_s"),
        load_s=_median(timed, "load_s"),
        caption_s=_median(timed, "caption_s"),
        caption=timed[-1]["text"],
    )
