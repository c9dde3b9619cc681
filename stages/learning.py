"""The worker-side pieces of estimator stages, importing no scikit-learn.

Worker processes run these: they turn a chunk into training arrays and
check them, compute per-chunk statistics, and apply fitted models. Importing
scikit-learn costs about a second in every fresh worker process, so what can
be done with NumPy is done with NumPy here: the statistics of the scalers'
exact merges and their ``transform`` (an affine map per column, which
:func:`stages.estimators` checks against scikit-learn's own output before
using it). Everything else loads the fitted model, once per process, from the
file the engine wrote.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import joblib
import numpy as np
import pyarrow as pa

from pipeline.errors import DataError, SpecError, SpecIssue
from pipeline.fitting import TrainingChunk
from pipeline.schema import check_columns

from .tables import to_array

__all__ = [
    "Affine",
    "ColumnMoments",
    "ColumnMomentsOf",
    "ColumnRange",
    "ColumnRangeOf",
    "EstimatorApply",
    "FeatureRows",
    "LabelSet",
    "ModelApply",
    "as_float_rows",
    "check_finite",
    "check_same_features",
    "column_moments",
    "column_range",
    "default_output_names",
    "float_rows",
    "load_model",
    "merge_column_moments",
    "merge_ranges",
    "native_labels",
]

_FLOATS = (np.float64, np.float32, np.float16)


# ---------------------------------------------------------------- checking rows


def native_labels(y: np.ndarray, what: str = "y") -> np.ndarray:
    """``y`` with a native dtype: object arrays cannot be memory-mapped for the workers.

    Labels given as Python objects (``np.array(["a", "b"], dtype=object)``, or
    a table's text column) become the equivalent NumPy strings or numbers; a
    mix of strings and numbers is refused, as scikit-learn refuses it.

    >>> native_labels(np.array(["yes", "no"], dtype=object)).dtype
    dtype('<U3')
    """
    if y.dtype != object:
        return y
    values = y.ravel().tolist()
    converted = np.asarray(values).reshape(y.shape)
    text = [isinstance(v, str) for v in values]
    if any(text) and not all(text):
        raise ValueError(
            f"Mix of label input types (string and number) in {what}: "
            f"{sorted({type(v).__name__ for v in values})}"
        )
    if converted.dtype.hasobject:
        raise TypeError(
            f"{what} holds Python objects that have no NumPy dtype (strings or numbers are "
            "needed); chunkline shares labels with its workers as a memory-mapped array"
        )
    return converted


def _columns_where(bad: np.ndarray, names: Sequence[str] | None) -> str:
    columns = np.flatnonzero(bad.any(axis=0)).tolist()
    labels = [repr(names[j]) for j in columns] if names is not None else list(map(str, columns))
    shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
    return f"column{'s' if len(labels) > 1 else ''} {shown}"


def check_finite(
    X: np.ndarray, allow_nan: bool, who: str, names: Sequence[str] | None = None
) -> None:
    """Raise :class:`DataError` if ``X`` holds infinities, or NaNs when ``who`` refuses them.

    ``names``: the columns' names (a table's features), else they are numbered.
    """
    if X.dtype.kind not in "fc" or X.size == 0:
        return
    if allow_nan:
        bad = np.isinf(X)
        if bad.any():
            raise DataError(
                f"Input X contains infinity in {_columns_where(bad.reshape(len(X), -1), names)}, "
                f"which {who} cannot use"
            )
        return
    if np.isfinite(X).all():
        return
    nan = np.isnan(X).reshape(len(X), -1)
    if nan.any():
        raise DataError(
            f"Input X contains {int(nan.sum())} NaN value(s) in {_columns_where(nan, names)}; "
            f"{who} does not accept missing values: drop those rows first (a finite_rows "
            "filter) or fill them in"
        )
    check_finite(X, allow_nan=True, who=who, names=names)


def feature_array(
    table: pa.Table, features: Sequence[str] | None, target: str | None
) -> tuple[np.ndarray, list[str]]:
    """A table chunk's features as float64 rows, and their names.

    The ``features`` columns, or every column but ``target``; errors name
    the ``features`` field.
    """
    names = (
        list(features) if features is not None else [c for c in table.column_names if c != target]
    )
    return to_array(table, names, field="features"), names


def float_rows(X: Any, who: str = "the estimator", n_features: int | None = None) -> np.ndarray:
    """A chunk as scikit-learn's scalers validate it: 2-D, floating point, NaN allowed.

    float64, float32 and float16 are kept; other numbers become float64.

    >>> float_rows(np.array([[1, 2]])).dtype
    dtype('float64')
    >>> float_rows(np.array([1.0, 2.0]))
    Traceback (most recent call last):
    ...
    pipeline.errors.DataError: Expected 2D array, got 1D array instead: reshape your data with ...
    """
    X = as_float_rows(X, who, n_features)
    check_finite(X, allow_nan=True, who=who)
    return X


def as_float_rows(X: Any, who: str = "the estimator", n_features: int | None = None) -> np.ndarray:
    """:func:`float_rows` without the search for infinities, for rows already checked.

    Only values that the conversion to float64 made infinite (long doubles
    beyond float64's range) are searched for, as scikit-learn finds them
    after its own conversion.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(
            f"Expected 2D array, got {X.ndim}D array instead: reshape your data with "
            "array.reshape(-1, 1) if it has a single feature or array.reshape(1, -1) if it "
            "contains a single sample"
        )
    if X.dtype.kind not in "biuf":
        raise DataError(f"{who} needs numbers; got an array of {X.dtype}")
    if X.dtype.type not in _FLOATS:
        narrowed = X.dtype.kind == "f"
        with np.errstate(over="ignore"):  # an overflow is reported just below, as an error
            X = X.astype(np.float64)
        if narrowed:
            check_finite(X, allow_nan=True, who=who)
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(
            f"X has {X.shape[1]} features, but {who} is expecting {n_features} features as input"
        )
    return X


def _check_output_names(width: int, output: Sequence[str]) -> None:
    """Raise a :class:`SpecError` unless ``output`` names each of ``width`` values per row."""
    if width != len(output):
        raise SpecError.at(
            "output",
            f"the model gives {width} value(s) per row, but output names "
            f"{len(output)} column(s): {list(output)}",
        )


#: Why ``features``, ``target`` and ``output`` are refused for array input.
_TABLE_ONLY = (
    "only for table input; with arrays, the chunk's columns are the features, source.y "
    "the target, and the model's output the array passed on"
)


@dataclass(frozen=True)
class FeatureRows:
    """``(chunk, y) -> (X, y)``: the arrays an estimator learns from, checked.

    On an array chunk, ``X`` is the chunk and ``y`` the source's aligned
    ``y``. On a table, ``X`` holds the ``features`` columns (default: every
    column but ``target``) as float64 and ``y`` the ``target`` column. The
    checks name what is wrong, so that the engine can name the chunk too.
    """

    who: str
    features: tuple[str, ...] | None = None
    target: str | None = None
    needs_y: bool = False
    allow_nan: bool = False
    classes: tuple[Any, ...] | None = None
    #: The output column names the stage gives (checked here: arrays have none),
    #: and how many values per row the model will give, when known before the fit.
    output: tuple[str, ...] | None = None
    width: int | None = None

    def __call__(self, data: Any, y: Any) -> tuple[np.ndarray, Any]:
        names = None
        if isinstance(data, pa.Table):
            X, y, names = self._from_table(data)
        else:
            given = {"features": self.features, "target": self.target, "output": self.output}
            for key, value in given.items():
                if value is not None:
                    raise SpecError.at(key, _TABLE_ONLY)
            X = np.asarray(data)
            if X.ndim != 2:
                raise DataError(
                    f"{self.who} needs rows of features (a 2-D array); the chunk has shape "
                    f"{X.shape}"
                )
        if self.output is not None and self.width is not None:
            _check_output_names(self.width, self.output)
        if self.needs_y and y is None:
            raise SpecError.at(
                "target",
                f"{self.who} learns from targets y: give source.y (an aligned .npy) for "
                "array sources, or target: <column> for tables",
            )
        check_finite(X, self.allow_nan, self.who, names)
        if self.needs_y and np.asarray(y).dtype.kind in "fc":
            bad = int(np.count_nonzero(~np.isfinite(y)))
            if bad:
                what = "source.y" if self.target is None else f"target column {self.target!r}"
                raise DataError(
                    f"{what} has {bad} NaN or infinite value(s); {self.who} learns from "
                    "finite targets only: drop those rows or fill them in first"
                )
        if self.classes is not None and y is not None and len(y):
            unseen = np.setdiff1d(np.unique(y), np.asarray(self.classes))
            if unseen.size:
                raise DataError(
                    f"label(s) {unseen.tolist()[:5]} are not among the classes "
                    f"{list(self.classes)} given to the stage; list every class in 'classes' "
                    "(or leave it out to have them found in a first pass)"
                )
        return X, y

    def _from_table(self, table: pa.Table) -> tuple[np.ndarray, Any, list[str]]:
        issues: list[SpecIssue] = []  # a typo in each field, reported in one go
        target = None if self.target is None else (self.target,)
        for field_name, columns in (("features", self.features), ("target", target)):
            if columns is None:
                continue
            try:
                check_columns(table, columns, field_name)
            except SpecError as exc:
                issues.extend(exc.issues)
        if issues:
            raise SpecError(issues)
        X, names = feature_array(table, self.features, self.target)
        if self.target is None:
            return X, None, names
        column = table.column(self.target)
        if column.null_count:
            raise DataError(
                f"target column {self.target!r} has {column.null_count} null value(s); "
                "drop those rows (a where filter) or fill them (fill_null) first"
            )
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        values = column.to_numpy()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            # NumPy strings, also when empty (asarray([]) would be float64).
            return X, values.astype(str), names
        try:
            return X, native_labels(values, f"target column {self.target!r}"), names
        except TypeError as exc:
            raise DataError(str(exc)) from None


# ---------------------------------------------------------------- per-chunk statistics


@dataclass(frozen=True, eq=False)
class ColumnMoments:
    """Per-column count of non-NaN values, mean and sum of squared deviations (M2).

    One count per column because NaNs are skipped column by column, as
    StandardScaler does; a column with no values has count 0, mean 0 and M2 0.
    ``n_rows`` counts rows, NaN or not.
    """

    n_rows: int
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def column_moments(X: np.ndarray) -> ColumnMoments:
    """The moments of a validated 2-D float chunk (see :func:`float_rows`).

    >>> m = column_moments(np.array([[1.0, np.nan], [3.0, 4.0]]))
    >>> m.count.tolist(), m.mean.tolist(), m.m2.tolist()
    ([2, 1], [2.0, 4.0], [2.0, 0.0])
    """
    n_rows, n_features = X.shape
    if n_rows == 0:
        zeros = np.zeros(n_features)
        return ColumnMoments(0, np.zeros(n_features, dtype=np.int64), zeros, zeros)
    # einsum, not X.sum(axis=0): 3x faster on row-major chunks, where neither
    # adds a column pairwise, so the sums are the same (a column-major or
    # one-column chunk may differ by a few ulps).
    total = np.einsum("ij->j", X, dtype=np.float64)
    if not np.isnan(total).any():  # the usual case: every column has every row
        mean = total / n_rows
        deviations = X - mean
        count = np.full(n_features, n_rows, dtype=np.int64)
    else:
        missing = np.isnan(X)
        count = n_rows - missing.sum(axis=0, dtype=np.int64)
        total = np.where(missing, 0.0, X).sum(axis=0, dtype=np.float64)
        mean = np.divide(total, count, out=np.zeros(n_features), where=count > 0)
        deviations = np.where(missing, 0.0, X - mean)
    m2 = np.einsum("ij,ij->j", deviations, deviations)
    return ColumnMoments(n_rows, count, mean, m2)


def check_same_features(left: int, right: int) -> None:
    """Raise :class:`DataError` when two chunks' states count different features."""
    if left != right:
        raise DataError(
            f"a chunk has {right} features, but the chunks before it have {left}; "
            "every chunk must have the same columns"
        )


def merge_column_moments(a: ColumnMoments, b: ColumnMoments) -> ColumnMoments:
    """Chan's pairwise update with one count per column (``a`` holds the earlier rows).

    A column with no values on one side takes the other side's moments unchanged.
    """
    check_same_features(a.mean.shape[0], b.mean.shape[0])
    count = a.count + b.count
    weight = np.divide(b.count, count, out=np.zeros(count.shape), where=count > 0)
    delta = b.mean - a.mean
    mean = a.mean + delta * weight
    m2 = a.m2 + b.m2 + delta * delta * (a.count * weight)
    return ColumnMoments(a.n_rows + b.n_rows, count, mean, m2)


@dataclass(frozen=True, eq=False)
class ColumnRange:
    """Rows seen (NaN rows included) and the per-column min and max ignoring NaNs.

    A column with no values yet has NaN bounds, which the NaN-ignoring merge
    (``numpy.fmin``/``fmax``) treats as neutral.
    """

    n_rows: int
    minimum: np.ndarray
    maximum: np.ndarray


def column_range(X: np.ndarray) -> ColumnRange:
    """Min and max per column of a validated 2-D float chunk, skipping NaNs.

    >>> r = column_range(np.array([[1.0, np.nan], [3.0, 4.0]]))
    >>> r.minimum.tolist(), r.maximum.tolist()
    ([1.0, 4.0], [3.0, 4.0])
    """
    # fmin/fmax skip NaNs and, with initial=NaN, give NaN (no warning) for a column
    # without values and for an empty chunk.
    return ColumnRange(
        int(X.shape[0]),
        np.fmin.reduce(X, axis=0, initial=np.nan),
        np.fmax.reduce(X, axis=0, initial=np.nan),
    )


def merge_ranges(a: ColumnRange, b: ColumnRange) -> ColumnRange:
    """Merge two ranges (``a`` holds the earlier rows)."""
    # Not np.minimum as the scalers' partial_fit does: that lets a chunk whose column
    # is all NaN turn the bound into NaN, whereas fit on all rows ignores those NaNs.
    check_same_features(a.minimum.shape[0], b.minimum.shape[0])
    return ColumnRange(
        a.n_rows + b.n_rows, np.fmin(a.minimum, b.minimum), np.fmax(a.maximum, b.maximum)
    )


@dataclass(frozen=True)
class ColumnMomentsOf:
    """The :class:`ColumnMoments` of each chunk's training rows (StandardScaler's merge).

    The rows were checked by :class:`FeatureRows` with the scaler's own rule
    on missing values; they are not searched again.
    """

    def chunk(self, data: TrainingChunk) -> ColumnMoments:
        return column_moments(as_float_rows(data.X))

    def combine(self, left: ColumnMoments, right: ColumnMoments) -> ColumnMoments:
        return merge_column_moments(left, right)

    def finalize(self, state: ColumnMoments) -> ColumnMoments:
        return state


@dataclass(frozen=True)
class ColumnRangeOf:
    """The :class:`ColumnRange` of each chunk's training rows (MinMax/MaxAbs merges).

    As :class:`ColumnMomentsOf`, on rows :class:`FeatureRows` has checked.
    """

    def chunk(self, data: TrainingChunk) -> ColumnRange:
        return column_range(as_float_rows(data.X))

    def combine(self, left: ColumnRange, right: ColumnRange) -> ColumnRange:
        return merge_ranges(left, right)

    def finalize(self, state: ColumnRange) -> ColumnRange:
        return state


@dataclass(frozen=True)
class LabelSet:
    """The sorted distinct labels of ``y`` over all chunks (a classifier's classes).

    >>> s = LabelSet()
    >>> s.combine(s.chunk(TrainingChunk(None, np.array([2, 0]), 0)),
    ...           s.chunk(TrainingChunk(None, np.array([1]), 1))).tolist()
    [0, 1, 2]
    """

    def chunk(self, data: TrainingChunk) -> np.ndarray:
        return np.unique(np.asarray(data.y)) if data.y is not None else np.array([])

    def combine(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if left.size == 0 or right.size == 0:  # an empty chunk must not change the dtype
            return right if left.size == 0 else left
        return np.union1d(left, right)

    def finalize(self, state: np.ndarray) -> np.ndarray:
        return state


# ---------------------------------------------------------------- applying a model


_OPS: dict[str, Callable[..., Any]] = {
    "subtract": np.subtract,
    "multiply": np.multiply,
    "add": np.add,
    "divide": np.divide,
}


@dataclass(frozen=True, eq=False)
class Affine:
    """A per-column affine map in NumPy: what the scalers' ``transform`` computes.

    ``steps`` are in-place operations on a float copy of the chunk, in
    order: ``(operation, operand, as_chunk_dtype)``, where the operand is
    first cast to the chunk's dtype when ``as_chunk_dtype`` (as StandardScaler
    does); then values are clipped to ``clip`` if given. The chunk is checked
    as the scalers check it (2-D, ``n_features`` columns, no infinities).

    >>> a = Affine(n_features=2, steps=(("subtract", np.array([1.0, 2.0]), True),))
    >>> a(np.array([[1.0, 4.0]])).tolist()
    [[0.0, 2.0]]
    """

    n_features: int
    steps: tuple[tuple[str, np.ndarray, bool], ...]
    clip: tuple[float, float] | None = None
    who: str = "the scaler"

    def __call__(self, X: Any) -> np.ndarray:
        X = float_rows(X, self.who, self.n_features)
        # The first step reads the chunk and writes a new array, the rest work
        # in place: the same values as on a copy, one pass over memory fewer.
        out, source = np.empty(X.shape, dtype=X.dtype), X
        for operation, operand, as_chunk_dtype in self.steps:
            _OPS[operation](source, operand.astype(X.dtype) if as_chunk_dtype else operand, out=out)
            source = out
        if source is X:
            out[...] = X
        if self.clip is not None:
            low, high = (np.asarray(bound, dtype=X.dtype) for bound in self.clip)
            np.clip(out, low, high, out=out)
        return out


def load_model(path: str | os.PathLike[str], trusted: Sequence[str] = ()) -> Any:
    """Load a model saved with joblib (``.joblib``, ``.pkl``) or skops (``.skops``).

    skops files load only types skops trusts by default, and those in
    ``trusted``; a file holding others is refused with a ``ValueError`` that
    lists them.
    """
    path = os.fspath(path)
    if path.endswith(".skops"):
        import skops.io

        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted))
        if untrusted:
            raise ValueError(
                f"it holds types that skops does not trust by default: {untrusted}. If you "
                "made the file, or trust its source, list them in the stage's trusted: "
                "(a forged file of such types can crash the process), or apply the "
                ".joblib file beside it"
            )
        return skops.io.load(path, trusted=list(trusted) or None)
    import joblib

    return joblib.load(path)


@dataclass
class _WorkerModel:
    """The models a worker process applies, each loaded once from its file.

    A few per process (:attr:`KEEP`, the most recently used): a pass may apply
    several saved models, one after the other in each chunk, and holding every
    model ever applied would keep older runs' models (and their files' pages)
    alive in reused workers. Each is its own copy, so setting its n_jobs
    touches nobody else's.
    """

    KEEP: ClassVar[int] = 4

    lock: threading.Lock = field(default_factory=threading.Lock)
    models: dict[str, tuple[tuple[Any, ...], Any]] = field(default_factory=dict)

    def get(self, path: str, single_thread: bool, trusted: tuple[str, ...]) -> Any:
        info = os.stat(path)
        # The file's identity and times are in the key: a worker that outlives
        # a run must not apply an older version of a saved model, even one
        # copied over it with its modification time kept (cp -p): the change
        # time moves on every write.
        stamp = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)
        key = (*stamp, single_thread, trusted)
        with self.lock:  # threads of one pass share the process
            known, model = self.models.pop(path, ((), None))
            if known != key:
                # The stale model and the least recently used go before loading:
                # never more than KEEP models at once.
                model = None
                while len(self.models) >= self.KEEP:
                    del self.models[next(iter(self.models))]
                model = load_model(path, trusted)
                if single_thread:
                    model.set_params(n_jobs=1)
            self.models[path] = (key, model)  # the most recent last
            return model


_WORKER_MODEL = _WorkerModel()


@dataclass(frozen=True, eq=False)
class ModelApply:
    """``X -> getattr(model, method)(X)``, with the model loaded from ``path`` in workers.

    The model travels to worker processes as its file: pickling a
    ModelApply drops the in-memory model, and each process loads the file
    once. ``tail`` and ``dtype`` describe one output row, for chunks with no
    rows (which scikit-learn refuses). ``single_thread`` sets ``n_jobs=1`` on
    a worker's copy: chunkline already runs one task per core.
    """

    method: str
    path: str | None
    tail: tuple[int, ...]
    dtype: str
    model: Any = field(default=None, repr=False)
    single_thread: bool = False
    trusted: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["model"] = None
        return state

    def _model(self) -> Any:
        if self.model is not None:  # in the process that fitted or loaded it
            return self.model
        assert self.path is not None
        return _WORKER_MODEL.get(self.path, self.single_thread, self.trusted)

    def __call__(self, X: Any) -> np.ndarray:
        if np.shape(X)[0] == 0:
            return np.empty((0, *self.tail), dtype=self.dtype)
        # One job per chunk on every backend. On dask, joblib would send a
        # model's own Parallel (a forest's, n_jobs=None) back to the cluster,
        # and the order of its sums, so the last bits, would vary between runs.
        with joblib.parallel_config(backend="sequential"):
            return np.asarray(getattr(self._model(), self.method)(X))


@dataclass(frozen=True)
class EstimatorApply:
    """A fitted model applied to a chunk: to an array as it is, or to a table's features.

    On a table, the model sees the ``features`` columns (default: every
    column but ``target``) and its output becomes the columns ``output``,
    appended, or replacing columns of the same name, whose nulls stay null
    where the model gave NaN (``named``: the spec gave the names; arrays
    have no column names to give). A chunk whose number of
    features is not the model's (``n_features``) is a mistake in the spec,
    such as applying a saved ``model`` to other data: it raises a
    :class:`~pipeline.errors.SpecError` naming ``model`` (where it came from).
    """

    kernel: Callable[[Any], np.ndarray]
    features: tuple[str, ...] | None = None
    target: str | None = None
    output: tuple[str, ...] = ()
    named: bool = False
    n_features: int | None = None
    model: str = "the model"
    allow_nan: bool = True

    def __call__(self, data: Any) -> Any:
        if not isinstance(data, pa.Table):
            if self.named:
                raise SpecError.at("output", _TABLE_ONLY)
            return self._apply(data, None)
        X, names = feature_array(data, self.features, self.target)
        out = self._apply(X, names)
        columns = out.reshape(out.shape[0], int(np.prod(out.shape[1:], dtype=np.int64)))
        _check_output_names(columns.shape[1], self.output)
        table = data
        for j, name in enumerate(self.output):
            values = columns[:, j]
            if name not in data.column_names:
                table = table.append_column(name, pa.array(values))
                continue
            # A value missing in stays missing out: the NaN a null became (a
            # scaler's, say) is written as null; a value a model filled in is kept.
            before = data.column(name)
            missing = None
            if before.null_count and values.dtype.kind == "f":
                missing = np.isnan(values) & before.is_null().to_numpy(zero_copy_only=False)
            replaced = pa.array(values, mask=missing)
            table = table.set_column(table.column_names.index(name), name, replaced)
        return table

    def _apply(self, X: Any, names: Sequence[str] | None) -> np.ndarray:
        width = np.shape(X)[1] if np.ndim(X) == 2 else None
        if self.n_features is not None and width is not None and width != self.n_features:
            raise SpecError.at(
                "model" if self.model != "the model" else "",
                f"{self.model} was fitted on {self.n_features} features, but its input has "
                f"{width} columns",
            )
        try:
            return self.kernel(X)
        except ValueError:
            if not self.allow_nan:
                # The model checks its input itself; a NaN is only looked for once it
                # has refused some, to say it as a fit's check does, naming columns.
                check_finite(np.asarray(X), False, self.model, names)
            raise


def default_output_names(stage: str, width: int, labels: Sequence[Any] | None) -> tuple[str, ...]:
    """Column names of a model's output on a table: the stage's name, or one per column.

    >>> default_output_names("score", 1, None), default_output_names("p", 2, [0, 1])
    (('score',), ('p_0', 'p_1'))
    """
    if width == 1:
        return (stage,)
    if labels is not None and len(labels) == width:
        return tuple(f"{stage}_{label}" for label in labels)
    return tuple(f"{stage}_{j}" for j in range(width))
