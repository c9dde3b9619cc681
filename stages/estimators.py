"""scikit-learn estimators as pipeline stages: fit over chunks, apply in parallel.

An :class:`Estimator` stage (``sklearn:`` in a spec) fits any scikit-learn
estimator by one of four strategies (``fit:``), then applies it to every row
(``apply:``) and passes the result on:

``merge``
    per-chunk sufficient statistics in parallel, merged exactly in chunk
    order (:mod:`stages.sklearn_merge`): scalers and naive Bayes;
``partial_fit``
    chunks consumed one by one, in chunk order, by the parent process while
    workers prepare the next chunks; ``epochs``, ``shuffle_chunks``;
    a classifier's ``classes`` found in a first pass when not given;
``full``
    the stage's input written once to a memory-mapped file and fitted at
    once, inside ``joblib.parallel_config``;
``sample``
    ``sample_rows`` rows drawn uniformly at random across all chunks.

``auto`` (the default) picks ``merge`` when an exact merge exists, else
``partial_fit`` when the estimator has it, else ``full``. With ``model:``
the stage applies a model saved by an earlier run and fits nothing.

>>> import numpy as np
>>> from pipeline import Pipeline
>>> X = np.arange(20.0).reshape(10, 2)
>>> run = Pipeline(X, [Estimator("sklearn.preprocessing.StandardScaler")], chunks=3,
...                n_jobs=1).run()
>>> bool(np.allclose(run.output.mean(axis=0), 0.0)), run.models["StandardScaler"].mean_.tolist()
(True, [9.0, 10.0])
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import joblib
import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.decomposition import PCA, IncrementalPCA, TruncatedSVD
from sklearn.utils import get_tags

from pipeline.chunking import counted, format_bytes
from pipeline.errors import SourceError, SpecError, SpecIssue
from pipeline.fitting import TrainingChunk
from pipeline.parallel import ParallelSettings
from pipeline.registry import did_you_mean, import_object
from pipeline.sinks import stage_files, to_jsonable
from pipeline.stage import FIT_STRATEGIES, Fit, FitSchedule, Fitted, Reduction

from .learning import (
    Affine,
    EstimatorApply,
    FeatureRows,
    LabelSet,
    ModelApply,
    default_output_names,
    load_model,
)
from .sklearn_merge import Merger, check_params, has_merge, merger_for

__all__ = [
    "APPLY_METHODS",
    "MODEL_CHUNK_BYTES",
    "Estimator",
    "MergeChunks",
    "make_estimator",
    "n_jobs_is_deprecated",
    "parallelizes_itself",
]

#: Input bytes per chunk when a scikit-learn model is applied and the spec sets
#: no chunk size. scikit-learn pays a fixed cost per call (validation, a
#: joblib dispatch per tree of a forest): a random forest's predict_proba over
#: 4M x 20 ran 12% faster with 32 MB chunks than with the 4 MiB default.
MODEL_CHUNK_BYTES = 32 * 2**20

#: What an estimator stage can apply to the rows once fitted.
APPLY_METHODS = ("transform", "predict", "predict_proba", "decision_function", "score_samples")
_FIT_CHOICES = ("auto", *FIT_STRATEGIES)

# scikit-learn estimators that run OpenMP threads of their own (no n_jobs parameter).
_OPENMP = (
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "KMeans",
    "MiniBatchKMeans",
)


# Decompositions whose transform gives exactly n_components values per row, when
# it is an integer (or whose fit refuses it). Others may give fewer (KernelPCA
# and Nystroem on fewer rows) or ignore it (FastICA without whitening).
_EXACT_COMPONENTS = (PCA, IncrementalPCA, TruncatedSVD)


# The numpydoc entry of ``n_jobs`` in a docstring: its header line and the
# indented (or blank) lines under it.
_N_JOBS_ENTRY = re.compile(r"^n_jobs\s*:.*\n(?:(?:[ \t]+.*)?\n)*", re.MULTILINE)


def parallelizes_itself(estimator: Any) -> str | None:
    """Why ``estimator`` runs in parallel on its own, or ``None`` if it does not.

    An ``n_jobs`` that the installed scikit-learn has deprecated does nothing:
    it does not count (:func:`n_jobs_is_deprecated`).

    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from sklearn.linear_model import Ridge
    >>> parallelizes_itself(RandomForestClassifier()), parallelizes_itself(Ridge())
    ('it has n_jobs (its own joblib workers)', None)
    """
    if "n_jobs" in estimator.get_params(deep=False):
        if n_jobs_is_deprecated(estimator):
            return None  # no scikit-learn estimator has both a no-op n_jobs and OpenMP
        return "it has n_jobs (its own joblib workers)"
    if type(estimator).__name__ in _OPENMP:
        return "it runs OpenMP threads"
    return None


def n_jobs_is_deprecated(estimator: Any) -> bool:
    """Whether the installed scikit-learn has deprecated ``estimator``'s ``n_jobs``.

    A deprecated ``n_jobs`` is a no-op kept for compatibility (LogisticRegression's
    since scikit-learn 1.8). scikit-learn marks a deprecated parameter in one
    of two ways, both checked here without fitting anything:

    - its default becomes the string ``"deprecated"`` (fit warns if it is set);
    - its default stays (LogisticRegression keeps ``n_jobs=None``) and only its
      docstring entry says ``.. deprecated::``, the directive scikit-learn's
      deprecation guidelines put in every deprecated parameter's entry.

    The ``FutureWarning`` that fit raises is no signal: it needs data and an
    ``n_jobs`` that is set, and ``explain`` fits nothing. The entry is read from
    the first class in the MRO that documents ``n_jobs``, so a subclass that
    documents its own (LogisticRegressionCV, whose ``n_jobs`` does run folds
    in parallel) is judged by it. Without docstrings (``python -OO``), an
    ``n_jobs`` counts.

    >>> from sklearn.ensemble import RandomForestRegressor
    >>> n_jobs_is_deprecated(RandomForestRegressor())
    False
    """
    if "n_jobs" not in estimator.get_params(deep=False):
        return False
    parameter = inspect.signature(type(estimator)).parameters.get("n_jobs")
    default = None if parameter is None else parameter.default
    if isinstance(default, str) and default == "deprecated":
        return True
    for klass in type(estimator).__mro__:
        # cleandoc drops the last newline, which the entry pattern needs.
        entry = _N_JOBS_ENTRY.search(inspect.cleandoc(klass.__doc__ or "") + "\n")
        if entry:
            return ".. deprecated::" in entry.group(0)
    return False


def make_estimator(target: Any, params: Mapping[str, Any]) -> tuple[BaseEstimator, str]:
    """An unfitted estimator from an import string, a class or an instance, with ``params``.

    Returns the estimator and the import string naming it (``""`` for an
    instance given as an object). Parameters are checked as scikit-learn's
    ``fit`` checks them, so that a typo fails before any data is read.

    Raises
    ------
    SpecError
        At ``sklearn`` (not an estimator, not importable) or ``params``
        (scikit-learn's own message, with a "did you mean").

    >>> make_estimator("sklearn.preprocessing.StandardScaler", {"with_mean": False})[0]
    StandardScaler(with_mean=False)
    """
    name = target if isinstance(target, str) else ""
    if isinstance(target, str):
        try:
            target = import_object(target)
        except SpecError as exc:
            raise exc.prefixed("sklearn") from None
    if isinstance(target, type) and hasattr(target, "get_params"):
        try:
            estimator = target()
        except TypeError as exc:
            raise SpecError.at("sklearn", f"cannot build {target.__name__}(): {exc}") from None
    elif hasattr(target, "get_params") and hasattr(target, "fit"):
        estimator = clone(target)
    else:
        raise SpecError.at(
            "sklearn",
            f"expected a scikit-learn estimator (an import string such as "
            f"'sklearn.linear_model.SGDClassifier', a class or an instance), got {target!r}",
        )
    if not isinstance(params, Mapping):
        raise SpecError.at("params", f"expected a mapping of parameters, got {params!r}")
    valid = estimator.get_params(deep=True)
    issues = []
    for key in params:
        if key not in valid:
            hint = did_you_mean(str(key), valid)
            issues.append(
                SpecIssue(
                    "params",
                    f"{type(estimator).__name__} has no parameter {key!r}{hint}; its parameters: "
                    f"{', '.join(sorted(k for k in valid if '__' not in k))}",
                )
            )
    if issues:
        raise SpecError(issues)
    estimator.set_params(**params)
    try:
        check_params(estimator)
    except (ValueError, TypeError) as exc:
        raise SpecError.at("params", str(exc)) from None
    return estimator, name


@dataclass(frozen=True)
class MergeChunks:
    """A merger's per-chunk statistic as a reduction over training chunks."""

    merger: Merger
    estimator: BaseEstimator

    def chunk(self, data: TrainingChunk) -> Any:
        return self.merger.chunk(self.estimator, data.X, data.y)

    def combine(self, left: Any, right: Any) -> Any:
        return self.merger.combine(left, right)

    def finalize(self, state: Any) -> Any:
        return state


def _names(value: Any, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise SpecError.at(key, f"expected a list of column names, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise SpecError.at(key, f"expected column names (strings), got {list(value)!r}")
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        raise SpecError.at(key, f"each column is named once; {repeated} appear more than once")
    return tuple(value)


@dataclass(frozen=True)
class Estimator(Fit):
    """A scikit-learn estimator as a stage: fitted over the chunks, then applied to them.

    Parameters
    ----------
    estimator
        An import string (``"sklearn.preprocessing.StandardScaler"``), an
        estimator class or an (unfitted) instance. May be omitted with ``model``.
    params
        Parameters of the estimator (``{"n_components": 5}``).
    fit
        ``auto``, ``merge``, ``partial_fit``, ``full`` or ``sample`` (see the module).
    apply
        What the rows become: ``transform``, ``predict``, ``predict_proba``,
        ``decision_function`` or ``score_samples``. Default: ``predict`` for
        classifiers, regressors, clusterers and outlier detectors, else
        ``transform``.
    features, target
        Table input only: the columns the estimator learns from (default:
        every column but ``target``) and the target column. With arrays, the
        chunk's columns are the features and the source's ``y`` the target.
    output
        Table input only: names of the columns the output becomes (appended,
        or replacing columns of the same name). Default: the stage's name
        for one value per row, else ``<name>_<class>`` or ``<name>_<j>``.
    model
        A model saved by an earlier run (``.joblib`` or ``.skops`` file), or a
        fitted estimator object: apply it without fitting.
    trusted
        Types a ``.skops`` model may hold beyond those skops trusts by default
        (``["sklearn.tree._tree.Tree"]`` for a forest): list only those of
        files you made or trust.
    epochs, shuffle_chunks, seed, classes
        ``partial_fit``: passes over the chunks; chunks of each epoch in a
        random order from ``seed``; a classifier's classes (found in a first
        pass when not given).
    sample_rows, seed
        ``sample``: rows in the sample and its seed.
    name, n_jobs, backend
        As for every stage; ``name`` defaults to the estimator's class name.

    Examples
    --------
    >>> stage = Estimator("sklearn.linear_model.SGDClassifier", params={"loss": "log_loss"},
    ...                   apply="predict_proba", name="clf")
    >>> stage.strategy, stage.method
    ('partial_fit', 'predict_proba')
    """

    spec_keys: ClassVar[tuple[str, ...]] = (
        "sklearn",
        "model",
        "name",
        "params",
        "fit",
        "apply",
        "features",
        "target",
        "output",
        "epochs",
        "shuffle_chunks",
        "seed",
        "classes",
        "sample_rows",
        "trusted",
        "n_jobs",
        "backend",
    )

    estimator: Any = None
    params: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    fit: str = field(default="auto", kw_only=True)
    apply: str | None = field(default=None, kw_only=True)
    features: Sequence[str] | None = field(default=None, kw_only=True)
    target: str | None = field(default=None, kw_only=True)
    output: Sequence[str] | None = field(default=None, kw_only=True)
    model: Any = field(default=None, kw_only=True)
    epochs: int = field(default=1, kw_only=True)
    shuffle_chunks: bool = field(default=False, kw_only=True)
    seed: int = field(default=0, kw_only=True)
    classes: Sequence[Any] | None = field(default=None, kw_only=True)
    sample_rows: int = field(default=100_000, kw_only=True)
    trusted: Sequence[str] = field(default=(), kw_only=True)
    # Resolved once, in __post_init__:
    unfitted: Any = field(default=None, init=False, compare=False, repr=False)
    strategy: str | None = field(default=None, init=False, compare=False, repr=False)
    method: str = field(default="", init=False, compare=False, repr=False)
    why: str = field(default="", init=False, compare=False, repr=False)
    target_name: str = field(default="", init=False, compare=False, repr=False)

    @classmethod
    def from_spec(cls, mapping: Mapping[str, Any]) -> Estimator:
        """The stage from its spec mapping (``{"sklearn": ..., "params": ...}``)."""
        fields = dict(mapping)
        return cls(fields.pop("sklearn", None), **fields)

    def _resolve(self) -> None:
        issues: list[SpecIssue] = []

        def check(step: Callable[[], None]) -> None:
            try:
                step()
            except SpecError as exc:
                issues.extend(exc.issues)

        check(self._resolve_estimator)
        check(self._check_name)
        check(self._resolve_columns)
        if self.unfitted is not None or self.model is not None:
            check(self._resolve_strategy)
            check(self._resolve_method)
        if issues:
            raise SpecError(issues)

    def _resolve_estimator(self) -> None:
        if self.model is not None:
            if isinstance(self.model, os.PathLike):
                self._set(model=os.fspath(self.model))
            fitted = hasattr(self.model, "get_params") and not isinstance(self.model, type)
            if not fitted and (not isinstance(self.model, str) or not self.model):
                raise SpecError.at(
                    "model", f"expected a model file or a fitted estimator, got {self.model!r}"
                )
            if self.params:
                raise SpecError.at("params", "a saved model (model:) is applied as it was saved")
            if self.estimator is None:
                self._set(name=self.name or "model")
                return
        elif self.estimator is None:
            raise SpecError.at("sklearn", "give an estimator, or model: a saved model's file")
        estimator, target = make_estimator(self.estimator, self.params)
        self._set(
            unfitted=estimator,
            target_name=target,
            params=dict(self.params),
            name=self.name or type(estimator).__name__,
        )

    def _check_name(self) -> None:
        # The name names the stage's files in sink.models: it must stay a file name.
        name = self.name
        if any(sep and sep in name for sep in (os.sep, os.altsep)) or name.startswith("."):
            raise SpecError.at(
                "name",
                f"{name!r} names the stage's model files (sink.models): give a name "
                "without '/' that does not start with '.'",
            )

    def _resolve_columns(self) -> None:
        self._set(features=_names(self.features, "features"), output=_names(self.output, "output"))
        if self.target is not None and not isinstance(self.target, str):
            raise SpecError.at("target", f"expected a column name, got {self.target!r}")
        if self.target is not None and self.target in (self.features or ()):
            raise SpecError.at(
                "features",
                f"the target {self.target!r} is among the features: the model would learn "
                "from the answer itself; leave it out",
            )
        trusted = self.trusted
        if (
            isinstance(trusted, str)
            or not isinstance(trusted, Sequence)
            or not all(isinstance(t, str) for t in trusted)
        ):
            raise SpecError.at("trusted", f"expected a list of type names, got {trusted!r}")
        if trusted and not (isinstance(self.model, str) and self.model.endswith(".skops")):
            raise SpecError.at("trusted", "only used to load a model: file ending in .skops")
        self._set(trusted=tuple(trusted))
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, Sequence):
                raise SpecError.at("classes", f"expected a list of labels, got {self.classes!r}")
            if not self.classes:
                raise SpecError.at("classes", "expected the labels, got an empty list")
            self._set(classes=tuple(self.classes))

    def _resolve_strategy(self) -> None:
        if self.fit not in _FIT_CHOICES:
            hint = did_you_mean(str(self.fit), _FIT_CHOICES)
            raise SpecError.at(
                "fit", f"expected one of {', '.join(_FIT_CHOICES)}, got {self.fit!r}{hint}"
            )
        knobs = {
            "epochs": 1,
            "shuffle_chunks": False,
            "classes": None,
            "sample_rows": 100_000,
            "seed": 0,
        }
        if self.model is not None:
            if self.fit != "auto":
                raise SpecError.at(
                    "fit", "a stage with model: applies a saved model and fits nothing"
                )
            used = [k for k, default in knobs.items() if getattr(self, k) != default]
            if used:
                raise SpecError.at(used[0], "only used when the stage fits a model")
            return
        estimator = self.unfitted
        kind = type(estimator).__name__
        strategy = self.fit
        if strategy == "auto":
            # Only a merge registered for its own class: a subclass may fit otherwise.
            if has_merge(estimator, exact=True):
                strategy, why = "merge", "auto: it has an exact merge"
            elif hasattr(estimator, "partial_fit"):
                strategy, why = "partial_fit", "auto: no exact merge; it has partial_fit"
            else:
                strategy, why = "full", "auto: no exact merge, no partial_fit"
        else:
            why = "as the spec says"
        if strategy == "merge" and not has_merge(estimator):
            try:
                merger_for(estimator)
            except TypeError as exc:
                raise SpecError.at("fit", str(exc)) from None
        if strategy == "partial_fit" and not hasattr(estimator, "partial_fit"):
            raise SpecError.at(
                "fit",
                f"{kind} has no partial_fit; use fit: full (all rows at once, from a "
                "memory map) or fit: sample",
            )
        wrong = {
            "epochs": strategy != "partial_fit",
            "shuffle_chunks": strategy != "partial_fit",
            "classes": strategy != "partial_fit" or not is_classifier(estimator),
            "sample_rows": strategy != "sample",
            "seed": not (strategy == "sample" or self.shuffle_chunks),
        }
        needs = {
            "classes": "fit: partial_fit of a classifier",
            "sample_rows": "fit: sample",
            "seed": "fit: sample, or shuffle_chunks",
        }
        for key, default in knobs.items():
            if wrong[key] and getattr(self, key) != default:
                raise SpecError.at(
                    key,
                    f"only used with {needs.get(key, 'fit: partial_fit')} "
                    f"(this stage fits by {strategy})",
                )
        self._set(strategy=strategy, why=why)
        self.schedule()  # checks epochs, seed, ...

    def _resolve_method(self) -> None:
        method = self.apply or ("" if self.unfitted is None else _default_method(self.unfitted))
        if method and method not in APPLY_METHODS:
            hint = did_you_mean(str(method), APPLY_METHODS)
            raise SpecError.at(
                "apply", f"expected one of {', '.join(APPLY_METHODS)}, got {method!r}{hint}"
            )
        if self.unfitted is None:  # a saved model: whether it has the method is checked on load
            self._set(method=method)
            return
        if not hasattr(self.unfitted, method):
            raise SpecError.at("apply", f"{self.unfitted!r} has no {method}")
        self._set(method=method)

    # ------------------------------------------------------------ the Fit protocol

    def schedule(self) -> FitSchedule | None:
        if self.strategy is None:
            return None
        return FitSchedule(
            strategy=self.strategy,  # type: ignore[arg-type]
            epochs=self.epochs,
            shuffle_chunks=self.shuffle_chunks,
            seed=self.seed,
            sample_rows=self.sample_rows,
        )

    def training_rows(self) -> FeatureRows:
        tags = get_tags(self.unfitted)
        return FeatureRows(
            who=f"{type(self.unfitted).__name__}",
            features=self.features,  # type: ignore[arg-type]
            target=self.target,
            needs_y=tags.target_tags.required,
            allow_nan=tags.input_tags.allow_nan,
            classes=self.classes,  # type: ignore[arg-type]
            output=self.output,  # type: ignore[arg-type]
            width=self._output_width(),
        )

    def _output_width(self) -> int | None:
        """Values per row the apply will give, when the spec tells before any fit."""
        if self.method in ("predict", "score_samples"):  # a table's target is one column
            return 1
        if self.method == "predict_proba" and self.classes is not None:
            return len(set(self.classes))  # scikit-learn keeps each class once
        estimators = self._unfitted_all()
        if self.method == "transform" and all(type(e) in _EXACT_COMPONENTS for e in estimators):
            counts = {e.get_params(deep=False).get("n_components") for e in estimators}
            count = counts.pop() if len(counts) == 1 else None
            if isinstance(count, int) and not isinstance(count, bool):
                return count
        return None

    def _unfitted_all(self) -> tuple[BaseEstimator, ...]:
        """The unfitted estimators the stage may fit (:class:`TrainMany`: every candidate)."""
        return (self.unfitted,)

    def chunk_state(self) -> Reduction | None:
        if self.strategy == "merge":
            merger = merger_for(self.unfitted)
            light = getattr(merger, "chunk_reduction", None)
            return light() if light is not None else MergeChunks(merger, self.unfitted)
        if self.strategy == "partial_fit" and self._needs_classes and self.classes is None:
            return LabelSet()
        return None

    @property
    def _needs_classes(self) -> bool:
        return is_classifier(self.unfitted)

    def fit_state(self, state: Any) -> Fitted:
        return Fitted(model=merger_for(self.unfitted).finalize(self.unfitted, state))

    def fit_rows(self, X: Any, y: Any, parallel: ParallelSettings) -> Fitted:
        model = clone(self.unfitted)
        model.fit(X) if y is None else model.fit(X, y)
        return Fitted(model=model)

    def partial_fit(self, model: Any, X: Any, y: Any, state: Any) -> Any:
        kwargs = {}
        if model is None:
            model = clone(self.unfitted)
            if self._needs_classes:
                kwargs["classes"] = np.asarray(self.classes if self.classes is not None else state)
        if y is None:
            model.partial_fit(X, **kwargs)
        else:
            model.partial_fit(X, y, **kwargs)
        return model

    def saved_model(self) -> tuple[Any, str | None]:
        assert self.model is not None
        if not isinstance(self.model, str):  # a fitted estimator object
            self._check_saved(self.model, "the model given")
            return self.model, None
        path = self.model
        if path.endswith(".json"):
            raise SpecError.at(
                f"stage {self.name!r}.model",
                f"{path} is a model card (what the model is, for people); give the model "
                "itself: the .joblib or .skops file beside it",
            )
        if not os.path.isfile(path):
            raise SourceError(f"stage {self.name!r}: model file not found: {path}")
        try:
            model = load_model(path, self.trusted)
        except Exception as exc:
            raise SourceError(
                f"stage {self.name!r}: cannot load the model in {path}: {type(exc).__name__}: {exc}"
            ) from exc
        self._check_saved(model, path)
        return model, path

    def _check_saved(self, model: Any, where: str) -> None:
        if self.unfitted is not None and not isinstance(model, type(self.unfitted)):
            raise SpecError.at(
                f"stage {self.name!r}.model",
                f"{where} holds a {type(model).__name__}, not a {type(self.unfitted).__name__}",
            )
        method = self.method or _default_method(model)
        if not callable(getattr(model, method, None)):
            what = repr(model) if hasattr(model, "get_params") else f"a {type(model).__name__}"
            raise SpecError.at(
                f"stage {self.name!r}.apply", f"{where} holds {what}, which has no {method}"
            )

    def apply_chunk_bytes(self, model: Any) -> int | None:
        # The scalers' NumPy kernels are NumPy maps: the engine's default suits them.
        return None if _lowered_kinds(model or self.unfitted) else MODEL_CHUNK_BYTES

    def threaded_apply(self, model: Any) -> bool:
        # scikit-learn's predict and transform, and the scalers' NumPy kernels,
        # spend their time in NumPy, BLAS or Cython code that releases the GIL.
        # Measured: a RandomForest's predict_proba (4M x 20) over row chunks on
        # threads, n_jobs=1 inside, was as fast as the forest's own n_jobs=2,
        # bitwise equal to the serial result, with a quarter of its memory, where
        # loky workers each imported scikit-learn (~1 s) and held a model copy;
        # the scaler's passes on W2 ran twice as fast on threads as on loky.
        return True

    def applier(self, model: Any, model_path: str | None) -> EstimatorApply:
        method = self.method or _default_method(model)
        n_features = getattr(model, "n_features_in_", None)
        if n_features is None:
            raise SpecError.at(
                f"stage {self.name!r}",
                f"{type(model).__name__} has no n_features_in_: it does not look fitted",
            )
        kernel: Callable[[Any], np.ndarray] | None = _lowered(model, method)
        if kernel is None:
            one = _template(model, method, n_features, self.name)
            # chunkline runs one task per core already. An n_jobs left at None
            # means one job inside joblib's workers; only a value the user set
            # is overridden (touching a deprecated n_jobs would warn).
            single = model.get_params(deep=False).get("n_jobs") is not None
            in_process = model
            if single:
                in_process = copy.copy(model)
                in_process.set_params(n_jobs=1)
            kernel = ModelApply(
                method,
                model_path,
                one.shape[1:],
                one.dtype.str,
                in_process,
                single_thread=single,
                trusted=tuple(self.trusted),
            )
            width = int(np.prod(one.shape[1:], dtype=np.int64))
        else:
            width = int(n_features)
        labels = getattr(model, "classes_", None) if method != "transform" else None
        output = self.output or default_output_names(self.name, width, labels)
        tags = _tags_of(model)
        allow_nan = True if tags is None else bool(tags.input_tags.allow_nan)
        return EstimatorApply(
            kernel,
            self._features_applied(model),
            self.target,
            tuple(output),
            self.output is not None,
            n_features,
            f"model {self.model}" if isinstance(self.model, str) else f"the model of {self.name!r}",
            allow_nan=allow_nan,
        )

    def _features_applied(self, model: Any) -> tuple[str, ...] | None:
        """The columns ``model`` is applied to; for a saved one, those it was fitted on.

        chunkline writes ``<stage>.json`` beside a saved model (see
        :meth:`_model_card`); a model fitted on a DataFrame knows its columns
        (``feature_names_in_``). Such a model is applied to the same columns
        in the same order: by default, and checked when the stage lists
        ``features`` too. Otherwise, the stage's own. A card that describes
        another model (another class or number of features) is an error, not
        a guess.
        """
        given = None if self.features is None else tuple(self.features)
        saved, where = self._card_features(model)
        if saved is None and self.model is not None:
            names = getattr(model, "feature_names_in_", None)
            if names is not None:
                saved, where = [str(c) for c in names], "its feature_names_in_"
        if saved is None:
            return given
        if given is not None and given != tuple(saved):
            raise SpecError.at(
                f"stage {self.name!r}.features",
                f"model {self.model if isinstance(self.model, str) else type(model).__name__} "
                f"was fitted on the columns {saved} (see {where}), in that order, but the "
                f"stage gives {list(given)}: leave features out to use the saved ones",
            )
        return tuple(saved)

    def _card_features(self, model: Any) -> tuple[list[str] | None, str]:
        """The columns the model card of a saved ``model`` lists (None: no card or none listed)."""
        if not isinstance(self.model, str):
            return None, ""
        card_path = os.path.splitext(self.model)[0] + ".json"
        if not os.path.isfile(card_path):
            return None, ""
        where = f"stage {self.name!r}: the model card {card_path} of {self.model}"
        try:
            with open(card_path) as f:
                card = json.load(f)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{where} cannot be read: {exc}") from exc
        saved = card.get("features") if isinstance(card, dict) else None
        listed = isinstance(saved, list) and all(isinstance(c, str) for c in saved)
        if not isinstance(card, dict) or not (saved is None or listed):
            raise SourceError(f"{where} is not one chunkline wrote: no list of features in it")
        kind = _class_path(model)
        n_features = getattr(model, "n_features_in_", None)
        if (card.get("estimator"), card.get("n_features_in")) != (kind, n_features):
            raise SourceError(
                f"{where} describes a {card.get('estimator')} fitted on "
                f"{card.get('n_features_in')} features, not this {kind} fitted on {n_features}: "
                "save a model with its card (sink.models), or remove the card"
            )
        return saved, card_path

    def save_model(
        self, fitted: Fitted, folder: str | os.PathLike[str]
    ) -> list[tuple[str | None, str]]:
        return stage_files(self._model_files(fitted, os.path.join(os.fspath(folder), self.name)))

    def _model_files(self, fitted: Fitted, base: str) -> dict[str, Callable[[str], None] | None]:
        """Each file of a saved model (by final path) and how to write it."""
        try:
            import skops.io as skops_io
        except ImportError:
            skops_io = None

        def card(path: str) -> None:
            with open(path, "w") as f:
                json.dump(self._model_card(fitted), f, indent=2)
                f.write("\n")

        return {
            f"{base}.joblib": lambda path: joblib.dump(fitted.model, path),
            # Without skops, an earlier .skops of this stage would be stale: removed.
            f"{base}.skops": (
                None if skops_io is None else lambda path: skops_io.dump(fitted.model, path)
            ),
            f"{base}.json": card,
        }

    def _model_card(self, fitted: Fitted) -> dict[str, Any]:
        """What the saved model is: estimator, strategy, columns; for people and tools."""
        import sklearn

        import pipeline

        model = fitted.model
        params = {k: v for k, v in model.get_params(deep=False).items() if _is_plain(v)}
        card = {
            "stage": self.name,
            "estimator": _class_path(model),
            "params": params,
            "fit": self.strategy,
            "apply": self.method,
            "features": self._features_seen(fitted),
            "target": self.target,
            "n_features_in": getattr(model, "n_features_in_", None),
            "classes": getattr(model, "classes_", None),
            "versions": {"chunkline": pipeline.__version__, "scikit-learn": sklearn.__version__},
        }
        if fitted.detail:
            card["detail"] = fitted.detail
        return to_jsonable(card)

    def _features_seen(self, fitted: Fitted) -> list[str] | None:
        """The columns of a table the model learnt from, in order; ``None`` for arrays."""
        if self.features is not None:
            return list(self.features)
        if fitted.columns is None:
            return None
        return [c for c in fitted.columns if c != self.target]

    def describe_parent_memory(
        self, n_rows: int | None, row_nbytes: int | None, chunk_rows: int
    ) -> str:
        kind = type(self.unfitted).__name__

        def about(rows: int | None) -> str:
            if rows is None or row_nbytes is None:
                return " (its size known when the pass starts)"
            return f", about {format_bytes(rows * row_nbytes)}"

        if self.strategy == "merge":
            return "per-chunk statistics only (a few values per feature)"
        if self.strategy == "partial_fit":
            return f"one chunk of rows at a time{about(chunk_rows)}"
        if self.strategy == "sample":
            rows = self.sample_rows if n_rows is None else min(self.sample_rows, n_rows)
            return f"the sample of {rows} rows{about(rows)}"
        size = (
            ""
            if n_rows is None or row_nbytes is None
            else f" ({format_bytes(n_rows * row_nbytes)})"
        )
        return (
            f"every row{size}, memory-mapped from the workspace: read, not copied, unless "
            f"{kind} converts or copies its input"
        )

    def describe_fit(self, parallel: ParallelSettings) -> str:
        kind = type(self.unfitted).__name__
        strategy = self.strategy
        how = {
            "merge": "per-chunk statistics merged exactly, in chunk order",
            "partial_fit": (
                f"chunk by chunk, {counted(self.epochs, 'epoch')}, each in an order shuffled "
                f"from seed {self.seed}"
                if self.shuffle_chunks
                else f"chunk by chunk in chunk order, {counted(self.epochs, 'epoch')}"
            ),
            "full": "all rows at once, memory-mapped, inside joblib.parallel_config",
            "sample": f"a uniform sample of {self.sample_rows} rows (seed {self.seed})",
        }[strategy or "merge"]
        if strategy == "partial_fit" and self._needs_classes:
            how += (
                f"; classes {list(self.classes)}"
                if self.classes is not None
                else "; classes found in this pass, before the first partial_fit"
            )
        apply = f"then {self.method}"
        if _lowered_kinds(self.unfitted):
            apply += " (a NumPy kernel checked against scikit-learn's own transform)"
        elif parallelizes_itself(self.unfitted):
            apply += " (one job inside each chunk's task: the chunks run in parallel)"
        return f"{self.name!r}: {kind} by {strategy} ({self.why}): {how}; {apply}"

    def to_spec(self) -> dict[str, Any]:
        if self.model is None and not self.target_name:
            raise TypeError(
                f"stage {self.name!r} was built from an estimator object; only estimators "
                "given by import string can be written as a spec"
            )
        spec: dict[str, Any] = {"name": self.name}
        if self.target_name:
            spec["sklearn"] = self.target_name
        for key in self.spec_keys[3:]:
            value = getattr(self, key)
            default = _DEFAULTS.get(key)
            if value is not None and value != default and value != {}:
                spec[key] = list(value) if isinstance(value, tuple) else value
        if self.model is not None:
            if not isinstance(self.model, str):
                raise TypeError(f"stage {self.name!r} applies a model object, not a file")
            spec["model"] = self.model
        return spec


_DEFAULTS: dict[str, Any] = {
    "fit": "auto",
    "epochs": 1,
    "shuffle_chunks": False,
    "seed": 0,
    "sample_rows": 100_000,
    "trusted": (),
}


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple))


def _class_path(model: Any) -> str:
    """The import path of ``model``'s class, as a model card records it."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _tags_of(model: Any) -> Any:
    """scikit-learn's tags of ``model``, or ``None`` if it is no scikit-learn estimator."""
    try:
        return get_tags(model)
    except Exception:  # an object without __sklearn_tags__: it checks its own input
        return None


def _default_method(estimator: Any) -> str:
    tags = _tags_of(estimator)
    kind = None if tags is None else tags.estimator_type
    if kind in ("classifier", "regressor", "clusterer", "outlier_detector"):
        return "predict"
    return "transform" if hasattr(estimator, "transform") else "predict"


def _template(model: Any, method: str, n_features: int, stage: str) -> np.ndarray:
    """The model's output for one row of zeros: the shape and dtype of every output row."""
    try:
        return np.asarray(getattr(model, method)(np.zeros((1, n_features))))
    except Exception as exc:
        raise SpecError.at(
            f"stage {stage!r}.apply",
            f"{type(model).__name__}.{method} fails on a row of zeros: {exc}",
        ) from exc


def _lowered_kinds(estimator: Any) -> bool:
    """Whether :func:`_lowered` has a NumPy kernel for ``estimator``'s class."""
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    return type(estimator) in (StandardScaler, MinMaxScaler, MaxAbsScaler)


def _lowered(model: Any, method: str) -> Affine | None:
    """The scalers' ``transform`` as a NumPy :class:`Affine`, if it matches bit for bit.

    Worker processes then need no scikit-learn. The kernel is used only if it
    reproduces the model's own ``transform`` exactly on a few rows of float64
    and float32 (so a scikit-learn version that computes differently falls
    back to calling it).
    """
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    if method != "transform":
        return None
    kind = type(model)
    steps: list[tuple[str, np.ndarray, bool]] = []
    clip = None
    if kind is StandardScaler:
        if model.with_mean:
            steps.append(("subtract", np.asarray(model.mean_), True))
        if model.with_std:
            steps.append(("divide", np.asarray(model.scale_), True))
    elif kind is MinMaxScaler:
        steps = [("multiply", model.scale_, False), ("add", model.min_, False)]
        clip = tuple(model.feature_range) if model.clip else None
    elif kind is MaxAbsScaler:
        steps = [("divide", model.scale_, False)]
        clip = (-1.0, 1.0) if model.clip else None
    else:
        return None
    affine = Affine(model.n_features_in_, tuple(steps), clip, kind.__name__)
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        X = (rng.standard_normal((8, model.n_features_in_)) * 10).astype(dtype)
        expected = model.transform(X)
        got = affine(X)
        if got.dtype != expected.dtype or not np.array_equal(got, expected, equal_nan=True):
            return None
    return affine
