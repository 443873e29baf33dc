"""Request context in the quality prediction: a per-value quality table blended with the text.

    ctx = ContextModel(fields=("task",), impute=("task",)).fit(contexts, Y, P_oof, X)
    P = ctx.apply(P_text, contexts, X)

A hierarchical model. The table is each model's mean quality per context value (``field=value``
keys seen at least ``min_count`` times), shrunk toward the model's overall mean: a ridge
regression on the one-hot values with the penalty chosen by K-fold squared error (with one
field, exactly the task-lookup shrinkage). The text prediction then moves a request within
its group: ``w * P_text + (1 - w) * table``, ``w`` chosen on *out-of-fold* text predictions
(in-sample ones would claim the text explains everything): for the best AIQ when every
training row is fully labelled (benchmarks; given ``cost``), else by least squares (logged
traffic, one model observed per row). Measured on the shared data, text routers over-fit
within-task noise: least squares gave ``ensemble`` w = 0.84 on RouterBench, below the task
lookup; chosen for AIQ, the weight leaves the text out for most families on LLMRouter (their
rows equal the table's alone in ``bench/results-context.md``).

A request with no value the table knows (a new team, an untagged call) gets exactly the text
prediction, unless its field is in ``impute``: then a multinomial logistic regression on the
text features predicts the value (a task is easy to read from the text, a team is not), the
table row is the expected one, and its own blend weight is fitted on out-of-fold class
probabilities. A router trained with ``impute`` is text-only at serving and still keeps the
coarse signal its training data named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any, Self

import numpy as np

from routeiq.estimator import Estimator
from routeiq.features.context import Context, check_fields, context_keys

ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
WEIGHTS = tuple(i / 10 for i in range(11))  # blend weights tried for out-of-fold AIQ


class ContextModel(Estimator):
    """Blends a text quality prediction with a per-context-value table (module docstring).

    ``fields``: the context fields used; ``impute``: those of them predicted from the text
    when a request lacks them; ``min_count``: rows a value needs for a column;
    ``max_values``: columns per field at most (the most frequent values); ``alpha``: the
    table's shrinkage (None: chosen from :data:`ALPHAS` by ``cv_folds``-fold CV).
    """

    name = "context"

    def __init__(
        self,
        fields: Sequence[str] = ("task",),
        *,
        impute: Sequence[str] = (),
        min_count: int = 5,
        max_values: int = 256,
        alpha: float | None = None,
        cv_folds: int = 5,
        random_state: int = 0,
    ) -> None:
        self.fields = list(check_fields(fields))
        self.impute = list(check_fields(impute))
        if not self.fields:
            raise ValueError("ContextModel needs at least one context field")
        if not set(self.impute) <= set(self.fields):
            raise ValueError(f"impute {self.impute} must be among the fields {self.fields}")
        if min_count < 1 or max_values < 1 or cv_folds < 2:
            raise ValueError("min_count and max_values must be >= 1, cv_folds >= 2")
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.min_count = min_count
        self.max_values = max_values
        self.alpha = alpha
        self.cv_folds = cv_folds
        self.random_state = random_state

    # -- training -------------------------------------------------------------------------

    def fit(
        self,
        contexts: Sequence[Context | None],
        quality: np.ndarray,
        predicted: np.ndarray,
        features: np.ndarray | None = None,
        cost: np.ndarray | None = None,
    ) -> Self:
        """``quality``: (n, m) true quality, NaN unobserved; ``predicted``: the text model's
        out-of-fold predictions for the same rows; ``features``: the text features (needed
        with ``impute``); ``cost``: (n, m) costs, with which a fully labelled ``quality``
        gets blend weights chosen for out-of-fold AIQ instead of squared error. Afterwards
        :attr:`oof_predictions` holds the blend out of fold."""
        Y = np.asarray(quality, dtype=np.float64)
        P = np.asarray(predicted, dtype=np.float64)
        n = len(contexts)
        if Y.ndim != 2 or Y.shape != P.shape or Y.shape[0] != n:
            raise ValueError(
                f"quality {Y.shape} and predicted {P.shape} must match, one row per context ({n})"
            )
        if self.impute and (features is None or len(features) != n):
            raise ValueError("impute needs the text features of every row")
        keys, key_fields = self._vocabulary(contexts)
        Z = self._onehot(contexts, keys)
        with np.errstate(invalid="ignore"):
            intercept = np.nan_to_num(np.nanmean(Y, axis=0), nan=0.0)
        centred = Y - intercept
        folds = np.random.default_rng(self.random_state).permutation(n) % self.cv_folds
        alpha = self.alpha if self.alpha is not None else _choose_alpha(Z, centred, folds)
        self.keys_ = keys
        self.key_fields_ = key_fields
        self.alpha_ = float(alpha)
        self.intercept_ = intercept
        self.weights_ = _ridge(Z, centred, alpha).astype(np.float32)
        self.impute_coef_ = np.zeros((0, 0 if features is None else np.shape(features)[1]))
        self.impute_intercept_ = np.zeros(0)
        self.impute_rows_: list[int] = []  # per class: its table row (-1: none)
        self.impute_sizes_: list[int] = []  # classes per imputed field
        self.impute_fields_: list[str] = []  # the imputed fields with a classifier
        self.impute_weight_ = 1.0
        self._after_load()
        # Out of fold: each row's table from the other folds (and its imputed values from
        # classifiers that did not see it), so weights and calibration are not optimistic.
        fold_weights = [
            _ridge(Z[folds != f], centred[folds != f], alpha) for f in range(self.cv_folds)
        ]
        oof_table = np.empty_like(Y)
        for f, W in enumerate(fold_weights):
            oof_table[folds == f] = intercept + Z[folds == f] @ W
        known = np.asarray(Z.any(axis=1), dtype=bool)
        by_aiq = cost is not None and not np.isnan(Y).any()
        weigh = partial(_aiq_weight, cost=cost) if by_aiq else _blend_weight
        self.text_weight_ = weigh(Y, P, oof_table, known)
        if not self.impute:
            oof = np.where(known[:, None], _mix(self.text_weight_, P, oof_table), P)
        else:
            # Calibrated as served to traffic that lacks the imputed fields: every row's
            # imputed fields are predicted from its text, its other fields are read.
            X = np.asarray(features, dtype=np.float64)
            real = np.logical_not(np.array(self._imputed_columns, dtype=bool))
            table = np.empty_like(Y)
            for f, W in enumerate(fold_weights):
                table[folds == f] = intercept + Z[folds == f][:, real] @ W[real]
            table += self._fit_imputers(contexts, X, folds, fold_weights)
            self.impute_weight_ = weigh(Y, P, table, np.ones(n, dtype=bool))
            oof = _mix(self.impute_weight_, P, table)
        self._oof = np.clip(oof, 0.0, 1.0)
        self._after_load()
        return self

    def _fit_imputers(
        self,
        contexts: Sequence[Context | None],
        X: np.ndarray,
        folds: np.ndarray,
        fold_weights: list[np.ndarray],
    ) -> np.ndarray:
        """One classifier per imputed field (its values from the text features); returns each
        row's out-of-fold expected table effect of the imputed fields, (n, m)."""
        from sklearn.linear_model import LogisticRegression  # training only

        expected = np.zeros((len(contexts), self.weights_.shape[1]))
        coefs, intercepts = [], []
        for name in self.impute:
            labels = np.array([_label(self._known_keys(ctx, (name,))) for ctx in contexts])
            classes = sorted(set(labels.tolist()))
            if len(classes) < 2:
                continue  # nothing to tell apart
            for f, W in enumerate(fold_weights):
                held = folds == f
                if len(set(labels[~held].tolist())) == len(classes):
                    clf = LogisticRegression(C=10.0, max_iter=300, tol=1e-3).fit(
                        X[~held], labels[~held]
                    )
                    expected[held] += clf.predict_proba(X[held]) @ _effects(classes, W)
            clf = LogisticRegression(C=10.0, max_iter=300, tol=1e-3).fit(X, labels)
            coef, bias = clf.coef_, clf.intercept_
            if len(classes) == 2:  # sklearn's binary form as a two-class softmax
                coef, bias = np.vstack([-coef, coef]) / 2, np.array([-bias[0], bias[0]]) / 2
            coefs.append(coef)
            intercepts.append(bias)
            self.impute_rows_.extend(int(c) for c in classes)
            self.impute_sizes_.append(len(classes))
            self.impute_fields_.append(name)
        if coefs:
            self.impute_coef_ = np.vstack(coefs).astype(np.float32)
            self.impute_intercept_ = np.concatenate(intercepts).astype(np.float32)
        return expected

    @property
    def oof_predictions(self) -> np.ndarray:
        """The blended out-of-fold predictions of the rows :meth:`fit` saw."""
        return self._oof

    def _after_load(self) -> None:
        self._column = {k: i for i, k in enumerate(self.keys_)}
        self._imputed_columns = [f in self.impute for f in self.key_fields_]
        self._rows = [self.weights_[i].astype(np.float64) for i in range(len(self.keys_))]
        self._base = np.asarray(self.intercept_, dtype=np.float64)
        coef = np.asarray(self.impute_coef_, dtype=np.float64)
        bias = np.asarray(self.impute_intercept_, dtype=np.float64)
        weights = np.asarray(self.weights_, dtype=np.float64)
        self._imputers = []
        start = 0
        for size in self.impute_sizes_:
            rows = self.impute_rows_[start : start + size]
            effects = np.stack([weights[r] if r >= 0 else np.zeros(weights.shape[1]) for r in rows])
            self._imputers.append(
                (coef[start : start + size].T.copy(), bias[start : start + size], effects)
            )
            start += size

    def _vocabulary(self, contexts: Sequence[Context | None]) -> tuple[list[str], list[str]]:
        """The table's keys, and the field of each."""
        keys: list[str] = []
        fields: list[str] = []
        for name in self.fields:
            counts = Counter(k for ctx in contexts for k in context_keys(ctx, (name,)))
            common = [k for k, c in counts.most_common(self.max_values) if c >= self.min_count]
            keys.extend(sorted(common))
            fields.extend([name] * len(common))
        return keys, fields

    def _onehot(self, contexts: Sequence[Context | None], keys: list[str]) -> np.ndarray:
        column = {k: i for i, k in enumerate(keys)}
        Z = np.zeros((len(contexts), len(keys)))
        for i, ctx in enumerate(contexts):
            for k in context_keys(ctx, self.fields):
                j = column.get(k)
                if j is not None:
                    Z[i, j] = 1.0
        return Z

    def _known_keys(self, context: Context | None, fields: Sequence[str]) -> list[int]:
        return [j for k in context_keys(context, fields) if (j := self._column.get(k)) is not None]

    # -- serving --------------------------------------------------------------------------

    def apply(
        self,
        predicted: np.ndarray,
        contexts: Sequence[Context | None],
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n, m) predictions with each row's context blended in."""
        self._check_fitted("weights_")
        P = np.asarray(predicted, dtype=np.float64)
        if P.shape[0] != len(contexts):
            raise ValueError(f"{P.shape[0]} prediction rows for {len(contexts)} contexts")
        rows = [
            self.apply_one(P[i], ctx, None if features is None else features[i])
            for i, ctx in enumerate(contexts)
        ]
        return np.stack(rows) if rows else P

    def apply_one(
        self, predicted: np.ndarray, context: Context | None, features: Any = None
    ) -> np.ndarray:
        """(m,) prediction for one request: row sums, no numpy gather (keeps the GIL)."""
        self._check_fitted("weights_")
        table, real, imputed = self._base, False, False
        known = self._known_keys(context, self.fields)
        for j in known:
            table, real = table + self._rows[j], True
        if features is not None and self._imputers:
            read = {self.key_fields_[j] for j in known}
            x = np.asarray(features, dtype=np.float64).reshape(-1)
            for name, (coef, bias, effects) in zip(
                self.impute_fields_, self._imputers, strict=True
            ):
                if name in read:
                    continue  # the request says it: read, not predicted
                logits = x @ coef + bias
                p = np.exp(logits - logits.max())
                table, imputed = table + (p / p.sum()) @ effects, True
        if not (real or imputed):
            return predicted
        w = self.impute_weight_ if imputed else self.text_weight_
        return np.clip(_mix(w, predicted, table), 0.0, 1.0)

    def describe(self, context: Context | None) -> str | None:
        """What the decision used, for its rule: ``context: team, task (from the text)``."""
        known = self.known(context)
        imputed = [f"{f} (from the text)" for f in self.impute_fields_ if f not in known]
        return "context: " + ", ".join(known + imputed) if known or imputed else None

    def known(self, context: Context | None) -> list[str]:
        """The fields of ``context`` whose value the table knows (for explanations)."""
        self._check_fitted("weights_")
        read = {self.key_fields_[j] for j in self._known_keys(context, self.fields)}
        return [name for name in self.fields if name in read]


def _label(rows: list[int]) -> int:
    """A row's class for an imputed field: its first known value's table row, else -1."""
    return rows[0] if rows else -1


def _effects(classes: list[int], W: np.ndarray) -> np.ndarray:
    """Each class's table effect (a row of ``W``; none for -1)."""
    return np.stack([W[c] if c >= 0 else np.zeros(W.shape[1]) for c in classes])


def _mix(w: float, P: np.ndarray, table: np.ndarray) -> np.ndarray:
    return w * P + (1.0 - w) * table


def _aiq_weight(
    Y: np.ndarray, P: np.ndarray, table: np.ndarray, rows: np.ndarray, *, cost: Any
) -> float:
    """The w of :data:`WEIGHTS` whose blend has the best AIQ on ``rows`` (the smallest on a
    tie: the table is the steadier signal). AIQ is what routing is judged by; squared error
    rewards following within-group noise that AIQ does not pay for (measured: ``ensemble``
    on RouterBench, least squares w = 0.84 and AIQ below the task lookup)."""
    from routeiq.evaluation.metrics import aiq, cost_range, sweep  # evaluation imports us

    if not rows.any():
        return 1.0
    Q, C = Y[rows], np.asarray(cost, dtype=np.float64)[rows]
    span = cost_range(Q, C)
    scores = []
    for w in WEIGHTS:
        blend = np.clip(_mix(w, P[rows], table[rows]), 0.0, 1.0)
        scores.append(aiq(sweep(blend, C, Q, C), span) or 0.0)
    best = max(scores)
    return next(w for w, a in zip(WEIGHTS, scores, strict=True) if a >= best - 1e-9)


def _blend_weight(Y: np.ndarray, P: np.ndarray, table: np.ndarray, rows: np.ndarray) -> float:
    """Least-squares w in [0, 1] for Y ~ w * P + (1 - w) * table on observed entries."""
    Y, P, table = Y[rows], P[rows], table[rows]
    ok = ~np.isnan(Y)
    d = (P - table)[ok]
    denom = float(d @ d)
    if denom <= 0:
        return 1.0
    return float(np.clip(d @ (Y - table)[ok] / denom, 0.0, 1.0))


def _ridge(Z: np.ndarray, R: np.ndarray, alpha: float) -> np.ndarray:
    """Per-column ridge without intercept on the observed rows of each column of ``R``."""
    v, m = Z.shape[1], R.shape[1]
    W = np.zeros((v, m))
    if v == 0:
        return W
    eye = np.eye(v) * alpha
    for j in range(m):
        ok = ~np.isnan(R[:, j])
        Zj = Z[ok]
        W[:, j] = np.linalg.solve(Zj.T @ Zj + eye, Zj.T @ R[ok, j])
    return W


def _choose_alpha(Z: np.ndarray, R: np.ndarray, folds: np.ndarray) -> float:
    """The shrinkage with the least K-fold squared error on the observed entries."""
    if Z.shape[1] == 0 or len(set(folds.tolist())) < 2:
        return ALPHAS[len(ALPHAS) // 2]
    errors = []
    for alpha in ALPHAS:
        sse = 0.0
        for f in set(folds.tolist()):
            fit, held = folds != f, folds == f
            diff = Z[held] @ _ridge(Z[fit], R[fit], alpha) - R[held]
            sse += float(np.nansum(diff * diff))
        errors.append(sse)
    return ALPHAS[int(np.argmin(errors))]
