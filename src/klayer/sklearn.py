"""A scikit-learn classifier trained by klayer: :class:`KLayerClassifier`.

It is klayer's own training (:class:`klayer.training.Trainer`, the same loop as ``klayer
train``) behind scikit-learn's estimator interface, so it works in a ``Pipeline``, in
``GridSearchCV`` and in ``cross_val_score``. It passes scikit-learn's
``parametrize_with_checks`` (see ``docs/sklearn.md``). Needs ``pip install 'klayer[sklearn]'``.
"""

from __future__ import annotations

import numpy as np

from .errors import KlayerError

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise KlayerError("klayer.sklearn needs scikit-learn 1.6 or later: pip install 'klayer[sklearn]'") from None

from .config import ExperimentConfig, ModelConfig, TrainConfig
from .data.prepare import Dataset, feature_stats
from .runs.model import SavedModel, save_model
from .training import Callback, Trainer

__all__ = ["KLayerClassifier"]

MIN_N_S = 200  # the default n_s on small data sets (measured: iris, wine, breast cancer, digits)


class _Stop(Exception):
    """Raised by :class:`_EarlyStopping` to end training between two updates."""


class _EarlyStopping(Callback):
    """Stop when the validation accuracy has not improved on its best for ``patience``
    evaluations in a row; keep a copy of the network at its best."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -np.inf
        self.best_network = None
        self.best_step = 0
        self.wait = 0

    def on_evaluate(self, trainer) -> None:
        acc = trainer.history[0][-1]["val_accuracy"]
        if acc > self.best:
            self.best, self.best_network, self.best_step, self.wait = acc, trainer.network(0), trainer.t, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            raise _Stop


def _seed(random_state) -> int:
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if random_state is None:  # fresh entropy; the global RNG is not touched
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31 - 1))


class KLayerClassifier(ClassifierMixin, BaseEstimator):
    """k-layer fully connected network with batch normalization and cyclical learning rates.

    The parameters are the keys of an experiment file's ``[model]`` and ``[train]`` tables
    (:class:`klayer.ModelConfig`, :class:`klayer.TrainConfig`); the defaults are assignment 3's
    3-layer batch-norm network, except ``n_s`` (by default two epochs, whatever the data size)
    and ``dtype`` (float64, so that predictions do not depend on which rows are predicted
    together, as scikit-learn checks; ``"float32"`` trains about twice as fast).

    Parameters
    ----------
    hidden : tuple of int, default (50, 50)
        Hidden layer widths; ``()`` is a linear softmax classifier.
    batch_norm : bool, default True
        Batch normalization on every hidden layer. Predictions always use the running averages
        (evaluation mode), so a row's prediction never depends on the other rows in the call.
    lam : float, default 0.005
        L2 penalty ``lam * sum ||W||^2`` added to the mean cross-entropy of a mini-batch.
        scikit-learn's ``MLPClassifier(alpha=...)`` adds ``0.5 * alpha * ||W||^2 / batch_size``
        instead, so ``alpha = 2 * lam * batch_size`` (``lam = 0.005``, batch 100: ``alpha = 1``).
        It is not called ``alpha`` because it is not scikit-learn's alpha.
    init : {"he", "xavier", "normal"}, default "he"
        Weight initialization.
    schedule : {"cyclic", "constant", "decay"}, default "cyclic"
        Learning rate: triangular cycles between ``eta_min`` and ``eta_max`` with half-period
        ``n_s`` updates for ``n_cycles`` cycles; or ``eta`` (times ``decay`` per epoch) for
        ``n_epochs`` epochs.
    eta_min, eta_max : float, default 1e-5, 0.1
        Learning-rate range of the cyclic schedule.
    n_s : int or None, default None
        Updates per half cycle; None means ``max(2 * (n_train // batch_size), 200)``: two
        epochs (the assignments' ``n_s = 2 floor(n / n_batch)``), but at least 200 updates, so
        that a small data set gets enough of them (two epochs of wine's 178 rows are 4 updates:
        0.77 accuracy against 0.98 with 200, 5-fold cross-validation).
    n_cycles : int, default 2
        Cycles of the cyclic schedule; training takes ``2 * n_s * n_cycles`` updates.
    eta, decay, n_epochs : float, float, int, default 0.01, 1.0, 10
        The constant and decaying schedules.
    momentum : float, default 0.0
        Heavy-ball momentum.
    batch_size : int, default 100
        Rows per update (at most the number of training rows). Each epoch reshuffles.
    evals_per_cycle : int, default 10
        Evaluations of the training and validation sets per cycle (per epoch for the other
        schedules); they make ``history_`` and are the unit of ``n_iter_no_change``.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the network.
    validation_fraction : float or None, default None
        Share of the training rows held out (seeded by ``random_state``) for the validation
        curve and early stopping; None means none (0.1 with ``early_stopping``).
    early_stopping : bool, default False
        Stop when the validation accuracy has not improved for ``n_iter_no_change`` evaluations
        and keep the network of the best evaluation.
    n_iter_no_change : int, default 10
        Patience of early stopping, in evaluations (10 = one cycle by default).
    warm_start : bool, default False
        Refit from the fitted network (and its standardization statistics) instead of a fresh
        one; the learning-rate schedule starts over. Labels must be among ``classes_``.
    random_state : int, RandomState, Generator or None, default None
        Initialization, shuffling and the validation split. An int makes ``fit`` deterministic.
    verbose : bool, default False
        Show a progress bar.

    Attributes
    ----------
    classes_ : (C,) array, the labels, sorted (any type: strings, integers, ...).
    n_features_in_ : int.
    feature_names_in_ : (d,) array of str, when ``X`` had column names (a DataFrame).
    network_ : :class:`klayer.Network`, the trained network.
    mean_, std_ : (d,) float64 training statistics; rows are standardized with them.
    history_ : list of dict, one per evaluation (step, epoch, eta, cost/loss/accuracy on train
        and val), as in a run folder's ``history.csv``.
    n_iter_ : int, updates made.
    best_validation_score_ : float or None, the best validation accuracy (with a validation set).

    Examples
    --------
    >>> from klayer.sklearn import KLayerClassifier
    >>> clf = KLayerClassifier(hidden=(50,), lam=0.001, random_state=0).fit(X_train, y_train)
    >>> clf.score(X_test, y_test)
    """

    def __init__(
        self,
        hidden=(50, 50),
        batch_norm=True,
        lam=0.005,
        init="he",
        schedule="cyclic",
        eta_min=1e-5,
        eta_max=0.1,
        n_s=None,
        n_cycles=2,
        eta=0.01,
        decay=1.0,
        n_epochs=10,
        momentum=0.0,
        batch_size=100,
        evals_per_cycle=10,
        dtype="float64",
        validation_fraction=None,
        early_stopping=False,
        n_iter_no_change=10,
        warm_start=False,
        random_state=None,
        verbose=False,
    ):
        self.hidden = hidden
        self.batch_norm = batch_norm
        self.lam = lam
        self.init = init
        self.schedule = schedule
        self.eta_min = eta_min
        self.eta_max = eta_max
        self.n_s = n_s
        self.n_cycles = n_cycles
        self.eta = eta
        self.decay = decay
        self.n_epochs = n_epochs
        self.momentum = momentum
        self.batch_size = batch_size
        self.evals_per_cycle = evals_per_cycle
        self.dtype = dtype
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    # -- fitting -------------------------------------------------------------------------------
    def _config(self, n_train: int, seed: int) -> ExperimentConfig:
        B = min(int(self.batch_size), n_train) if self.batch_size >= 1 else self.batch_size
        n_s = self.n_s if self.n_s is not None else max(2 * (n_train // max(B, 1)), MIN_N_S)
        return ExperimentConfig(
            name="KLayerClassifier",
            model=ModelConfig(hidden=tuple(self.hidden), batch_norm=bool(self.batch_norm), init=self.init),
            train=TrainConfig(
                lam=self.lam,
                batch_size=B,
                schedule=self.schedule,
                eta_min=self.eta_min,
                eta_max=self.eta_max,
                n_s=n_s,
                n_cycles=self.n_cycles,
                eta=self.eta,
                decay=self.decay,
                n_epochs=self.n_epochs,
                momentum=self.momentum,
                evals_per_cycle=self.evals_per_cycle,
                seed=seed,
                dtype=self.dtype,
                checkpoint_every=0,
            ),
        )

    def _split(self, n: int, seed: int):
        f = self.validation_fraction
        if f is None and self.early_stopping:
            f = 0.1
        if f is None or f == 0:
            return np.arange(n), None
        if not 0 < f < 1:
            raise ValueError(f"validation_fraction must be in (0, 1) or None, got {f!r}")
        n_val = max(1, round(f * n))
        if n - n_val < 1:
            raise ValueError(f"validation_fraction={f} leaves no training rows out of {n}")
        perm = np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def fit(self, X, y):
        """Train on ``X: (n, d)`` (numbers, any width) and labels ``y: (n,)`` of any type.

        Returns
        -------
        self
        """
        warm = self.warm_start and hasattr(self, "network_")
        X, y = validate_data(self, X, y, reset=not warm, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if warm:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if len(unseen):
                raise ValueError(
                    f"warm_start: labels {unseen.tolist()} are not among classes_ {self.classes_.tolist()}"
                )
            y_idx = np.searchsorted(self.classes_, y)
            classes = self.classes_
        else:
            classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"KLayerClassifier needs at least 2 classes; only one class is present ({classes[0]!r})")
        seed = _seed(self.random_state)
        tr, va = self._split(len(y_idx), seed)
        Xtr, ytr = X[tr], y_idx[tr]
        Xva, yva = (Xtr, ytr) if va is None else (X[va], y_idx[va])
        if warm:
            cfg_net = self.network_.config
            if cfg_net.hidden != tuple(self.hidden) or cfg_net.batch_norm != bool(self.batch_norm):
                raise ValueError("warm_start needs the hidden sizes and batch_norm of the fitted network")
            mean, std = self.mean_, self.std_
        else:
            mean, std = feature_stats(Xtr)
        data = Dataset(
            Xtr, ytr, Xva, yva, Xva, yva, mean, std, len(classes), "KLayerClassifier.fit",
            tuple(str(c) for c in classes), None, self.dtype,
        )  # fmt: skip
        config = self._config(len(ytr), seed)
        stopper = _EarlyStopping(self.n_iter_no_change) if self.early_stopping else None
        trainer = Trainer([config], data, [stopper] if stopper else [])
        if warm:
            if self.network_.config.dtype != self.dtype:
                raise ValueError("warm_start needs the dtype of the fitted network")
            for k, v in self.network_.params.items():
                trainer.stack.params[k][0] = v
        try:
            trainer.run(progress=bool(self.verbose), desc="KLayerClassifier")
            stopped = False
        except _Stop:
            stopped = True
        network = stopper.best_network if stopper and stopper.best_network is not None else trainer.network(0)
        self.classes_ = classes
        self.network_ = network
        self.mean_, self.std_ = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.history_ = trainer.history[0]
        self.n_iter_ = int(trainer.t)
        self.stopped_early_ = stopped
        self.best_validation_score_ = None if va is None else max(r["val_accuracy"] for r in self.history_)
        return self

    # -- prediction ----------------------------------------------------------------------------
    def _model(self) -> SavedModel:
        return SavedModel(self.network_, self.mean_, self.std_, {"classes": [str(c) for c in self.classes_]})

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, C)`` in evaluation mode, columns in the order of ``classes_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._model().predict_proba(X)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, as labels from ``classes_``."""
        P = self.predict_proba(X)
        return self.classes_[np.argmax(P, axis=1)]

    def save_model(self, path, **extra):
        """Write the fitted network as a klayer model file (usable by ``klayer predict``,
        ``evaluate`` and ``export``); class names are the labels as strings."""
        check_is_fitted(self)
        return save_model(
            path, self.network_, self.mean_, self.std_, {"name": "KLayerClassifier", **extra},
            classes=[str(c) for c in self.classes_],
        )  # fmt: skip
