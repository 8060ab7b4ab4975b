"""Nearest-neighbour search over embeddings: exact in numpy, or approximate (faiss HNSW)."""

from __future__ import annotations

import numpy as np

_SERIAL_MACS = 4 * 65536  # OpenBLAS runs a GEMM of at most this many multiply-adds serially
_SERIAL_ROWS = 16  # query views per call at most; more rows is a batch: let BLAS thread it
HNSW_NEIGHBOURS = 32  # graph degree M: recall vs memory
HNSW_EF_SEARCH = 128  # candidates kept while searching: recall vs latency
_ANN_INSTALL = "pip install 'gamelab-caption-sdk[ann]'"


def serial_dot(left: np.ndarray, right_rows: np.ndarray) -> np.ndarray:
    """``left @ right_rows.T`` as BLAS calls small enough to run on the calling thread.

    A larger call wakes OpenBLAS's thread pool, whose threads then spin while ONNX Runtime
    encodes the next query: on 2 cores that tripled the latency of a search. Batches (more
    than a few rows on the left, as when building) still get every BLAS thread.
    """
    if len(left) > _SERIAL_ROWS:
        return left @ right_rows.T
    step = max(1, _SERIAL_MACS // (left.shape[0] * left.shape[1]))
    blocks = [left @ right_rows[i : i + step].T for i in range(0, len(right_rows), step)]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(left), 0), left.dtype)


def exact_top(vectors: np.ndarray, queries: np.ndarray, count: int):
    """The ``count`` rows of highest score, best first; a row scores its best query view."""
    scores = serial_dot(queries, vectors).max(axis=0)  # (V, D) x (M, D) -> (V, M) -> (M,)
    rows = np.arange(len(scores))
    if count < len(scores):
        rows = np.argpartition(-scores, count - 1)[:count]
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    return rows, scores[rows]


def import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(f"the 'hnsw' backend needs faiss: {_ANN_INSTALL}") from error
    return faiss


class Hnsw:
    """faiss HNSW graph on inner product: approximate, about O(log rows) per query."""

    def __init__(self, vectors: np.ndarray):
        self.faiss = import_faiss()
        metric = self.faiss.METRIC_INNER_PRODUCT
        self.index = self.faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS, metric)
        self.index.add(np.ascontiguousarray(vectors))

    def top(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        params = self.faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, count))
        best: dict[int, float] = {}  # row -> best score over the query views
        for view in queries:  # one at a time: no OpenMP team spinning against ONNX Runtime
            scores, rows = self.index.search(view[None], count, params=params)  # (1, count)
            for row, score in zip(rows[0].tolist(), scores[0].tolist(), strict=True):
                if row >= 0 and score > best.get(row, -np.inf):
                    best[row] = score
        order = sorted(best, key=best.__getitem__, reverse=True)
        return np.asarray(order, np.int64), np.asarray([best[r] for r in order], np.float32)
