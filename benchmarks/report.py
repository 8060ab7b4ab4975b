"""Turn pytest-benchmark's JSON into the suite's summary: ratios, goals, tables and a chart.

Called by benchmarks/conftest.py at the end of ``pytest benchmarks --benchmark-only``; run it
by hand to redo the summary from a saved JSON:

    python benchmarks/report.py benchmarks/results/benchmark.json [--output DIR]

Writes summary.json (every derived number), summary.md (the tables) and comparison.png
(milliseconds per image at batch 1, every pipeline). Reads only ``extra_info`` fields that the
benchmarks record (``kind``, ``pipeline``, ``run``, ``precision``, ``beam``, ``batch``, ...).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gamelab_export.metrics import markdown_table

GOAL_ENCODER_SPEEDUP = 5.0  # SDK default caption vs TF compiled InceptionV3 forward pass alone
GOAL_SPEEDUP = 10.0  # SDK default caption vs the whole TF compiled caption pipeline
GOAL_BLEU4 = 22.0  # the default bundle's Flickr8k test BLEU-4 at beam 3, measured in this run
TEST_SPLIT_IMAGES = 1000  # Flickr8k's test split
GOAL_INT8 = 2.5  # INT8 encoder vs FP32 encoder
GOAL_RSS_MB = 150.0  # fresh process peak RSS
GOAL_FIRST_S = 1.0  # process start to first caption
BASELINE_ENCODER = "inception_v3"  # the original design's encoder: the baseline of the goals
LOADED_FRACTION = 0.5  # warn when the 1-min load average at the start passes this share of the CPUs
OTHERS_FRACTION = 0.1  # or when other processes used this share of the CPUs during the run
_EVAL_MODELS = {"tf-eager": "TensorFlow FP32", "tf-compiled": "TensorFlow FP32"}
BREAKDOWN_COLUMNS = (
    "preprocess_ms",
    "encoder_ms",
    "steps",
    "step_ms",
    "decoder_steps_ms",
    "beam_bookkeeping_ms",
    "init_and_rest_ms",
    "total_ms",
)
_COLOURS = {"tf-eager": "#b0b0b0", "tf-compiled": "#606060", "fp32": "#6baed6", "int8": "#08519c"}
# What makes two rows the same pipeline at another thread setting.
_SAME_PIPELINE = ("kind", "run", "bundle", "precision", "beam", "batch", "provider")


def _rows(output_json: dict, kind: str) -> list[dict]:
    rows = []
    for bench in output_json.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("kind") == kind:
            stats = bench["stats"]
            rows.append(
                {
                    **info,
                    "name": bench["name"],
                    "median_s": stats["median"],
                    "mean_s": stats["mean"],
                    "rounds": stats["rounds"],
                }
            )
    return rows


def _eval_bleu4(evals: dict, row: dict) -> float | None:
    """Full-test-split BLEU-4 of this pipeline from the run's eval/metrics.json or the
    shipped bundle's manifest, if any (trained TF weights only: a run folder's)."""
    if row["pipeline"] != "sdk" and not row.get("trained"):
        return None
    model = _EVAL_MODELS.get(row["pipeline"]) or f"ONNX {row['precision'].upper()}"
    decoding = "greedy" if row.get("beam", 1) == 1 else f"beam {row['beam']}"
    for entry in evals.get(row["run"], []):
        same_bundle = entry.get("bundle") in (None, row.get("bundle"))
        if entry.get("data", "test") != "test":  # out-of-domain rows (coco-ood)
            continue
        if same_bundle and entry.get("model") == model and entry.get("decoding") == decoding:
            return round(float(entry["BLEU-4"]), 2)
    return None


def _label(row: dict) -> str:
    name = f"{row['run']} {row.get('bundle') or row.get('encoder')}"
    if row["pipeline"] != "sdk":
        return f"{name} {row['pipeline']} greedy"
    decoding = "greedy" if row["beam"] == 1 else f"beam {row['beam']}"
    return f"{name} SDK {row['precision'].upper()} {decoding}"


def caption_table(output_json: dict, evals: dict) -> list[dict]:
    """Every caption row, one per thread setting."""
    rows = _rows(output_json, "caption")
    per_image = {
        (r["pipeline"], r["run"], r.get("encoder"), r["batch"], r.get("threads")): r["median_s"]
        / r["batch"]
        for r in rows
    }
    table = []
    for row in rows:
        seconds = row["median_s"] / row["batch"]
        same = (row["run"], row.get("encoder"), row["batch"], row.get("threads"))
        compiled = per_image.get(("tf-compiled", *same))
        eager = per_image.get(("tf-eager", *same))
        table.append(
            {
                "pipeline": _label(row),
                "run": row["run"],
                "kind": row["pipeline"],
                "encoder": row.get("encoder"),
                "bundle": row.get("bundle"),
                "precision": row["precision"],
                "beam": row.get("beam", 1),
                "batch": row["batch"],
                "provider": row.get("provider", ""),
                "threads": row.get("threads", "?"),
                "weights": row.get("weights", "the bundle's"),
                "ms/image": round(1e3 * seconds, 2),
                "images/s": round(row["batch"] / row["mean_s"], 2),
                "x vs tf-eager": round(eager / seconds, 2) if eager else None,
                "x vs tf-compiled": round(compiled / seconds, 2) if compiled else None,
                "BLEU-4 subset": row.get("bleu4_subset"),
                "BLEU-4 test split": _eval_bleu4(evals, row),
            }
        )
    return sorted(table, key=lambda r: (r["provider"], r["batch"], r["run"], -r["ms/image"]))


def best_threads(table: list[dict], columns=_SAME_PIPELINE) -> list[dict]:
    """Each pipeline at its fastest thread setting, with every setting's time beside it."""
    groups: dict[tuple, list[dict]] = {}
    for row in table:
        groups.setdefault(tuple(row.get(c) for c in columns), []).append(row)
    best = []
    for rows in groups.values():
        fastest = min(rows, key=lambda r: r["ms/image"])
        settings = sorted(rows, key=lambda r: str(r["threads"]))
        best.append(
            {
                **fastest,
                "best threads": fastest["threads"],
                "ms/image by threads": ", ".join(
                    f"{r['threads']}: {r['ms/image']}" for r in settings
                ),
            }
        )
    return sorted(best, key=lambda r: (r["provider"], r["batch"], r["run"], -r["ms/image"]))


def encoder_table(output_json: dict) -> list[dict]:
    peaks = {r["precision"]: r["macs"] / r["median_s"] for r in _rows(output_json, "gemm")}
    rows = _rows(output_json, "encoder")
    fp32 = {
        (r["run"], r.get("encoder"), r["batch"], r.get("provider"), r.get("threads")): r["median_s"]
        for r in rows
        if r["pipeline"] == "sdk" and r["precision"] == "fp32"
    }
    table = []
    for row in rows:
        per_image = row["median_s"] / row["batch"]
        entry = {
            "encoder": f"{row['run']} {row.get('bundle') or row.get('encoder')} "
            f"{row['pipeline']} {row['precision'].upper()}",
            "run": row["run"],
            "kind": row["pipeline"],
            "pipeline": row["pipeline"],
            "precision": row["precision"],
            "bundle": row.get("bundle"),
            "encoder name": row.get("encoder"),
            "batch": row["batch"],
            "provider": row.get("provider", ""),
            "threads": row.get("threads", "?"),
            "weights": row.get("weights", "the bundle's"),
            "ms/image": round(1e3 * per_image, 2),
        }
        macs = row.get("macs_per_image")
        if macs and row["pipeline"] == "sdk" and row.get("provider") == "CPUExecutionProvider":
            achieved = macs / per_image
            entry["GMAC/image"] = round(macs / 1e9, 3)
            entry["GMAC/s"] = round(achieved / 1e9, 1)
            peak = peaks.get(row["precision"])
            if peak:
                entry["bound ms"] = round(1e3 * macs / peak, 2)
                entry["achieved/bound %"] = round(100 * achieved / peak, 1)
        base = fp32.get(
            (row["run"], row.get("encoder"), row["batch"], row.get("provider"), row.get("threads"))
        )
        if row["pipeline"] == "sdk" and row["precision"] == "int8" and base:
            entry["int8 speed-up"] = round(base / row["median_s"], 2)
        table.append(entry)
    return sorted(table, key=lambda r: (r["provider"], r["run"], r["batch"], r["pipeline"]))


def _default(rows: list[dict], default_bundle: str, **match) -> dict | None:
    """The row of the SDK's default model: the shipped bundle unless ``run`` says otherwise."""
    match = {"run": "shipped", **match}
    for row in rows:
        if row.get("bundle") == default_bundle and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _goal(name: str, target: str, measured, met: bool | None, note: str) -> dict:
    state = "not measured" if met is None else ("met" if met else "MISSED")
    return {"goal": name, "target": target, "measured": measured, "status": state, "note": note}


def _fastest(rows: list[dict], **match) -> dict | None:
    """The fastest row (over thread settings) of the baseline encoder's TF pipeline."""
    found = [
        r
        for r in rows
        if r.get("encoder name", r.get("encoder")) == BASELINE_ENCODER
        and r["batch"] == 1
        and all(r.get(k) == v for k, v in match.items())
    ]
    return min(found, key=lambda r: r["ms/image"]) if found else None


def _sdk_default(captions: list[dict], default_bundle: str) -> dict | None:
    """``Captioner()`` as users call it: beam 3, batch 1, ONNX Runtime's default threads."""
    return _default(captions, default_bundle, kind="sdk", beam=3, batch=1, threads="default")


def paired_table(output_json: dict) -> list[dict]:
    """test_paired_speedup's rows: per TF thread setting, the median over rounds of each
    pipeline's median time per image and of the rounds' ratios (TF / SDK)."""
    return [
        {
            "sdk bundle": r["sdk_bundle"],
            "TF pipeline": f"{r['run']} {r['encoder']} tf-compiled",
            "TF threads": r["threads"],
            "SDK": f"{r['sdk_bundle']} beam 3, Captioner()",
            "rounds": r["rounds"],
            "images": r["images"],
            "ratios by round": " ".join(f"{x:g}" for x in r.get("caption_ratios", [])),
            "SDK ms": r["sdk_ms"],
            "TF caption ms": r["tf_caption_ms"],
            "TF forward pass ms": r["tf_encode_ms"],
            "x vs caption": r["caption_ratio"],
            "x vs forward pass": r["encode_ratio"],
            "weights": r.get("weights", ""),
        }
        for r in _rows(output_json, "paired")
    ]


def _paired_goals(paired: list[dict], default_bundle: str) -> list[dict] | None:
    """The speed goals from the paired rows: TF at its best thread setting (its lowest median
    time), and the median of that setting's per-round ratios."""
    rows = [r for r in paired if r["sdk bundle"] == default_bundle]
    if not rows:
        return None
    goals = []
    for name, target, goal, time_column, ratio_column in (
        (
            "caption vs TF compiled InceptionV3 forward pass alone",
            f">= {GOAL_ENCODER_SPEEDUP:g}x",
            GOAL_ENCODER_SPEEDUP,
            "TF forward pass ms",
            "x vs forward pass",
        ),
        (
            "caption vs TF compiled InceptionV3 caption pipeline",
            f">= {GOAL_SPEEDUP:g}x",
            GOAL_SPEEDUP,
            "TF caption ms",
            "x vs caption",
        ),
    ):
        best = min(rows, key=lambda r: r[time_column])
        note = (
            f"paired: {best['rounds']} rounds of {best['images']} images through each in turn, "
            f"median of the per-round ratios; {default_bundle} beam 3, Captioner(): "
            f"{best['SDK ms']} ms, file "
            f"to text; TF: {best[time_column]} ms at its best threads "
            f"({best['TF threads']}), weights: {best['weights']}"
        )
        ratio = best[ratio_column]
        goals.append(_goal(name, target, round(ratio, 2), ratio >= goal, note))
    return goals


def _speed_goals(summary: dict, default_bundle: str) -> list[dict]:
    paired = _paired_goals(summary.get("paired", []), default_bundle)
    if paired is not None:
        return paired
    captions = [r for r in summary["caption"] if r["provider"] != "CUDAExecutionProvider"]
    sdk = _sdk_default(captions, default_bundle)
    goals = []
    for name, target, goal, baseline in (
        (
            "caption vs TF compiled InceptionV3 forward pass alone",
            f">= {GOAL_ENCODER_SPEEDUP:g}x",
            GOAL_ENCODER_SPEEDUP,
            _fastest(summary["encoder"], pipeline="tf-compiled"),
        ),
        (
            "caption vs TF compiled InceptionV3 caption pipeline",
            f">= {GOAL_SPEEDUP:g}x",
            GOAL_SPEEDUP,
            _fastest(captions, kind="tf-compiled"),
        ),
    ):
        if not (sdk and baseline):
            note = f"needs the shipped {default_bundle} at default threads and a TF baseline"
            goals.append(_goal(name, target, None, None, note))
            continue
        ratio = baseline["ms/image"] / sdk["ms/image"]
        note = (
            f"{default_bundle} beam 3, Captioner() (threads {sdk['threads']}): "
            f"{sdk['ms/image']} ms per image, file to text; TF: {baseline['ms/image']} ms at "
            f"its best threads ({baseline['threads']}), weights: {baseline['weights']}"
        )
        goals.append(_goal(name, target, round(ratio, 2), ratio >= goal, note))
    return goals


def _quality_goal(summary: dict, default_bundle: str) -> dict:
    name, target = "Flickr8k test BLEU-4, beam 3, this run", f">= {GOAL_BLEU4:g}"
    row = next((r for r in summary["quality"] if r["bundle"] == default_bundle), None)
    if row is None:
        return _goal(name, target, None, None, "test_caption_quality did not run")
    note = f"{row['images']} images, CIDEr {row['CIDEr']}, {row['metric']}"
    if row["images"] < TEST_SPLIT_IMAGES or row["BLEU-4"] is None:
        note += "; a subset, not the goal's measure"
        return _goal(name, target, row["BLEU-4"], None, note)
    return _goal(name, target, row["BLEU-4"], row["BLEU-4"] >= GOAL_BLEU4, note)


def _int8_goal(summary: dict, default_bundle: str) -> dict:
    name, target = "INT8 encoder vs FP32, batch 1", f">= {GOAL_INT8:g}x"
    encoder = next(
        (
            r
            for r in summary["encoder"]
            if r.get("bundle") == default_bundle and r["batch"] == 1 and r.get("int8 speed-up")
        ),
        None,
    )
    if encoder is None:
        note = f"needs a run folder with both {default_bundle} bundles (GAMELAB_BENCH_RUNS)"
        return _goal(name, target, None, None, note)
    speedup = encoder["int8 speed-up"]
    shares = summary["profile"].get(f"{encoder['run']} {default_bundle} int8", {})
    note = "INT8 encoder time: " + ", ".join(f"{k} {v}%" for k, v in list(shares.items())[:4])
    return _goal(name, target, speedup, speedup >= GOAL_INT8, note)


def _startup_goals(summary: dict, default_bundle: str) -> list[dict]:
    rss = ("fresh process peak RSS", f"<= {GOAL_RSS_MB:g} MB")
    first = ("process start to first caption", f"<= {GOAL_FIRST_S:g} s")
    start = _default(summary["startup"], default_bundle)
    if not start:
        return [_goal(*goal, None, None, f"needs {default_bundle} INT8") for goal in (rss, first)]
    peak, seconds = start["peak RSS MB"], start["first caption s"]
    return [
        _goal(*rss, peak, peak <= GOAL_RSS_MB, f"{start['RSS after import MB']} MB after imports"),
        _goal(
            *first,
            seconds,
            seconds <= GOAL_FIRST_S,
            f"interpreter start {start['python start s']} s, import {start['import s']} s, "
            f"load {start['load s']} s, caption {start['caption s']} s",
        ),
    ]


def goals(summary: dict, default_bundle: str) -> list[dict]:
    """The goals, each a ratio or a number measured in this run."""
    return [
        *_speed_goals(summary, default_bundle),
        _quality_goal(summary, default_bundle),
        _int8_goal(summary, default_bundle),
        *_startup_goals(summary, default_bundle),
    ]


def summarise(output_json: dict) -> dict:
    gamelab = output_json.get("gamelab", {})
    default_bundle = gamelab.get("settings", {}).get("default_bundle", "efficientnet-lite0")
    summary = {
        "settings": gamelab.get("settings", {}),
        "machine": output_json.get("machine_info", {}).get("cpu", {}).get("brand_raw"),
        "caption": caption_table(output_json, gamelab.get("eval", {})),
        "encoder": encoder_table(output_json),
        "paired": paired_table(output_json),
        "quality": [
            {
                "bundle": r["bundle"],
                "beam": r["beam"],
                "threads": r.get("threads"),
                "images": r["images"],
                "BLEU-4": r["bleu4"],
                "CIDEr": r.get("cider"),
                "metric": r["metric"],
                "images/s": round(r["images"] / r["median_s"], 1),
            }
            for r in _rows(output_json, "quality")
        ],
        "gemm_peak_gmacs": {
            r["precision"]: round(r["macs"] / r["median_s"] / 1e9, 1)
            for r in _rows(output_json, "gemm")
        },
        "breakdown": [
            {
                "bundle": f"{r['run']} {r['bundle']} {r['precision'].upper()}",
                "beam": r["beam"],
                "threads": r.get("threads", "default"),
                **{k: r[k] for k in BREAKDOWN_COLUMNS},
            }
            for r in _rows(output_json, "breakdown")
        ],
        "decoder_step": [
            {
                "bundle": f"{r['run']} {r['bundle']} {r['precision'].upper()}",
                "rows": r["rows"],
                "ms/step": round(1e3 * r["median_s"], 3),
            }
            for r in _rows(output_json, "decoder_step")
        ],
        "startup": [
            {
                "bundle": r["bundle"],
                "run": r["run"],
                "precision": r["precision"],
                "first caption s": round(r["median_s"], 3),
                "peak RSS MB": r["peak_rss_mb"],
                "RSS after import MB": r["import_rss_mb"],
                "python start s": r.get("python_start_s"),
                "import s": r["import_s"],
                "load s": r["load_s"],
                "caption s": r["caption_s"],
            }
            for r in _rows(output_json, "startup")
        ],
        "load_average": gamelab.get("load_average"),
        "server_load": _rows(output_json, "server_load"),
        "profile": {
            f"{r['run']} {r['bundle']} {r['precision']}": r["op_share_percent"]
            for r in _rows(output_json, "profile")
        },
    }
    summary["caption_best"] = best_threads(summary["caption"])
    encoder_columns = ("kind", "run", "encoder name", "bundle", "precision", "batch", "provider")
    summary["encoder_best"] = best_threads(summary["encoder"], encoder_columns)
    summary["throughput"] = _throughput(summary["caption"])
    summary["goals"] = goals(summary, default_bundle)
    return summary


def _throughput(captions: list[dict]) -> list[dict]:
    """Each SDK bundle's best captions/s at beam 3: over batch sizes and thread settings."""
    best: dict[tuple, dict] = {}
    for row in captions:
        if row["kind"] != "sdk" or row["beam"] != 3:
            continue
        key = (row["run"], row["bundle"], row["precision"], row["provider"])
        if key not in best or row["images/s"] > best[key]["captions/s"]:
            best[key] = {
                "pipeline": row["pipeline"],
                "provider": row["provider"],
                "captions/s": row["images/s"],
                "batch": row["batch"],
                "threads": row["threads"],
            }
    return list(best.values())


def _load_warning(load: dict) -> str | None:
    """A warning when other work kept the CPUs busy: ORT's spinning threads suffer most.

    The load average at the end counts the suite's own work, so it is not used: other work
    is the load before the suite started, and the CPU time other processes took during it
    (``others_cpu_share``, see cpu_share.py; older reports lack it)."""
    if not load:
        return None
    others = load.get("others_cpu_share")
    before = load["start"][0]
    if before < LOADED_FRACTION * load["cpus"] and (others or 0.0) < OTHERS_FRACTION:
        return None
    during = "" if others is None else f", other processes used {others:.0%} of them during the run"
    return (
        f"**Warning: the machine was busy** (1-min load average {before:.1f} at the start on "
        f"{load['cpus']} CPUs{during}): these numbers are not representative; rerun on an "
        "idle machine."
    )


def markdown(summary: dict) -> str:
    settings = summary["settings"]
    parts = [
        "# Benchmark summary",
        f"CPU: {summary['machine']}; thread settings: {settings.get('thread_settings')}; "
        f"images: {settings.get('images')} (Flickr8k test); bundles: {settings.get('bundles')}",
        _load_warning(summary["load_average"]),
        "## Goals",
        markdown_table(
            summary["goals"], ["goal", "target", "measured", "status", "note"], float_format=".2f"
        ),
        "## Paired: the default caption and TF's, in turn",
        "Each round runs the images through `Captioner()`, TF's compiled caption pipeline and "
        "TF's forward pass, one pass after the other (the order rotating), so each round's "
        "ratios compare times taken seconds apart; ms are medians per image, the goals use "
        "the median ratio at TF's best thread setting. The tables after it time each "
        "pipeline on its own, minutes apart.",
        markdown_table(
            summary["paired"],
            [
                "TF pipeline",
                "TF threads",
                "SDK",
                "rounds",
                "images",
                "SDK ms",
                "TF caption ms",
                "TF forward pass ms",
                "x vs caption",
                "x vs forward pass",
                "ratios by round",
            ],
            float_format=".2f",
        ),
        "## End to end, each pipeline at its best thread setting "
        "(file to caption; ms/image = median round / batch)",
        markdown_table(
            summary["caption_best"],
            [
                "pipeline",
                "provider",
                "batch",
                "best threads",
                "ms/image",
                "ms/image by threads",
                "images/s",
                "BLEU-4 subset",
                "BLEU-4 test split",
                "weights",
            ],
            float_format=".2f",
        ),
        "## Best captions/s (beam 3, over batch sizes and thread settings)",
        markdown_table(
            summary["throughput"],
            ["pipeline", "provider", "captions/s", "batch", "threads"],
            float_format=".1f",
        ),
        "## Quality in this run (the whole Flickr8k test split unless smoke mode)",
        markdown_table(
            summary["quality"],
            ["bundle", "beam", "threads", "images", "BLEU-4", "CIDEr", "images/s", "metric"],
            float_format=".2f",
        ),
        "## End to end at each fixed thread setting",
        markdown_table(
            summary["caption"],
            [
                "pipeline",
                "provider",
                "threads",
                "batch",
                "ms/image",
                "images/s",
                "x vs tf-eager",
                "x vs tf-compiled",
            ],
            float_format=".2f",
        ),
        "## Encoder alone, at its best thread setting",
        markdown_table(
            summary["encoder_best"],
            ["encoder", "provider", "batch", "best threads", "ms/image", "ms/image by threads"],
            float_format=".2f",
        ),
        "## Encoder against this CPU's GEMM peak",
        f"Peak GEMM (GMAC/s): {summary['gemm_peak_gmacs']}",
        markdown_table(
            summary["encoder"],
            [
                "encoder",
                "provider",
                "threads",
                "batch",
                "ms/image",
                "GMAC/image",
                "GMAC/s",
                "bound ms",
                "achieved/bound %",
                "int8 speed-up",
            ],
            float_format=".2f",
        ),
        "## Breakdown of one caption (batch 1, ms, means over the images)",
        markdown_table(
            summary["breakdown"],
            ["bundle", "beam", "threads", *BREAKDOWN_COLUMNS],
            float_format=".2f",
        ),
        markdown_table(summary["decoder_step"], ["bundle", "rows", "ms/step"], float_format=".3f"),
        "## Fresh process (import, load, one beam-3 caption)",
        markdown_table(
            summary["startup"],
            [
                "bundle",
                "precision",
                "first caption s",
                "peak RSS MB",
                "RSS after import MB",
                "python start s",
                "import s",
                "load s",
                "caption s",
            ],
            float_format=".3g",
        ),
        "## Encoder time by operator kind (onnxruntime profiler, %)",
        "\n".join(
            f"- {name}: " + ", ".join(f"{k} {v}" for k, v in list(share.items())[:6])
            for name, share in summary["profile"].items()
        ),
    ]
    if summary["server_load"]:
        parts += [
            "## Server load (test_server_load.py)",
            markdown_table(
                summary["server_load"],
                ["clients", "seconds", "requests", "errors", "requests_per_s", "p50_ms", "p99_ms"],
            ),
        ]
    return "\n\n".join(part for part in parts if part) + "\n"


def chart(summary: dict, path: Path) -> Path | None:
    """Horizontal bars: ms per image at batch 1 on the CPU, every pipeline, log scale."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in summary["caption_best"]
        if r["batch"] == 1 and r["provider"] != "CUDAExecutionProvider"
    ]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["ms/image"])
    colours = [_COLOURS.get(r["kind"], _COLOURS.get(r["precision"], "#333333")) for r in rows]
    figure, axes = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.5))
    labels = [f"{r['pipeline']} ({r['best threads']} threads)" for r in rows]
    bars = axes.barh(labels, [r["ms/image"] for r in rows], color=colours)
    axes.bar_label(bars, labels=[f"{r['ms/image']:.0f} ms" for r in rows], padding=3)
    axes.set_xscale("log")
    axes.set_xlabel("milliseconds per image, file to caption, batch 1 (log scale)")
    axes.set_title(
        f"Captioning latency, each at its best thread setting: {summary['machine']}", fontsize=9
    )
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(output_json: dict, folder: str | Path) -> list[Path]:
    """Write summary.json, summary.md and comparison.png into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarise(output_json)
    written = [folder / "summary.json", folder / "summary.md"]
    written[0].write_text(json.dumps(summary, indent=1) + "\n")
    written[1].write_text(markdown(summary))
    png = chart(summary, folder / "comparison.png")
    if png is None:
        (folder / "comparison.png").unlink(missing_ok=True)  # never leave an older run's chart
    return written + ([png] if png else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON of this suite")
    parser.add_argument("--output", type=Path, help="default: the JSON's folder")
    args = parser.parse_args(argv)
    written = write_report(json.loads(args.json.read_text()), args.output or args.json.parent)
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
