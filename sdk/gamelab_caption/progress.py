"""Progress reporting shared by long jobs (index builds, batch jobs)."""

from __future__ import annotations

from collections.abc import Callable

Progress = bool | Callable[[int, int], None]


def progress_callback(progress: Progress, total: int, description: str):
    """(update(done, total), close) for a callable, a tqdm bar (``True``), or nothing.

    tqdm is optional: without it ``True`` reports nothing.
    """
    if callable(progress):
        return progress, lambda: None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, unit="image", desc=description, smoothing=0.1)
            return lambda done, _: bar.update(done - bar.n), bar.close
    return lambda done, total: None, lambda: None
