"""The benchmark summary's reading of a run: the busy warning (other work, not the suite's
own) and the speed goals from the paired rounds."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cpu_share = _module("cpu_share")


def test_others_share_is_the_machine_time_less_the_suites_own():
    start = cpu_share.CpuClock(wall=100.0, machine=50.0, own=10.0)
    # 10 s on 2 CPUs: the machine did 14 CPU-s, the suite 9 of them, others 5 (a quarter)
    end = cpu_share.CpuClock(wall=110.0, machine=64.0, own=19.0)
    assert cpu_share.others_share(start, end, cpus=2) == pytest.approx(0.25)
    alone = cpu_share.CpuClock(wall=110.0, machine=69.0, own=29.0)  # all of it the suite's
    assert cpu_share.others_share(start, alone, cpus=2) == 0.0
    unknown = cpu_share.CpuClock(wall=110.0, machine=None, own=19.0)
    assert cpu_share.others_share(start, unknown, cpus=2) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_the_clock_reads_this_machine_and_this_process():
    before = cpu_share.now()
    sum(range(2_000_000))  # some CPU time of our own
    after = cpu_share.now()
    assert after.machine >= before.machine and after.own > before.own and after.wall > before.wall


def test_the_warning_ignores_the_suites_own_load_at_the_end():
    report = _module("report")
    cpus = os.cpu_count()
    own_work = {"start": (0.1, 0.5, 0.5), "end": (cpus, 1.0, 1.0), "cpus": cpus}
    assert report._load_warning({**own_work, "others_cpu_share": 0.02}) is None
    assert report._load_warning(own_work) is None  # a report from before others_cpu_share
    warning = report._load_warning({**own_work, "others_cpu_share": 0.3})
    assert "other processes used 30% of them during the run" in warning
    busy_before = {**own_work, "start": (cpus, 1.0, 1.0), "others_cpu_share": 0.0}
    assert "machine was busy" in report._load_warning(busy_before)


def _paired(threads: str, tf_caption_ms: float, caption_ratio: float) -> dict:
    return {
        "kind": "paired", "run": "shipped", "encoder": "inception_v3", "threads": threads,
        "weights": "w", "sdk_bundle": "efficientnet-lite0", "rounds": 5, "images": 32,
        "sdk_ms": 10.0, "tf_caption_ms": tf_caption_ms, "tf_encode_ms": tf_caption_ms - 10,
        "caption_ratio": caption_ratio, "encode_ratio": caption_ratio - 1,
        "caption_ratios": [caption_ratio] * 5,
    }  # fmt: skip


def test_the_speed_goals_take_tf_at_its_best_setting_from_the_paired_rounds():
    report = _module("report")
    benchmarks = [
        {"extra_info": _paired(threads, ms, ratio), "name": f"paired-{threads}",
         "stats": {"median": 1.0, "mean": 1.0, "rounds": 5}}
        for threads, ms, ratio in (("1", 140.0, 11.5), ("2", 96.0, 8.5), ("default", 100.0, 9.0))
    ]  # fmt: skip
    paired = report.paired_table({"benchmarks": benchmarks})
    forward, pipeline = report._speed_goals({"paired": paired, "caption": []}, "efficientnet-lite0")
    # TF is fastest at 2 threads: its ratio counts, not the flattering 11.5 at 1 thread
    assert (pipeline["measured"], pipeline["status"]) == (8.5, "MISSED")
    assert "best threads (2)" in pipeline["note"] and "5 rounds of 32 images" in pipeline["note"]
    assert (forward["measured"], forward["status"]) == (7.5, "met")
