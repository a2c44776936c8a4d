"""Poisoning and backdoor audit of a captioned clip corpus: pure functions over clip features, captions and sources.

A backdoor in text-to-video data is a few clips whose captions carry a rare trigger token and whose pictures show
what the attacker wants made on that token, whatever the rest of the caption says. Its signature, which every
suspected trigger is scored on:

- **spectral separation** (spectral signatures, Tran, Li and Madry 2018, "Spectral Signatures in Backdoor
  Attacks", applied to caption residuals): each of the token's clips is compared with its *caption controls* (the
  `controls` clips without the token whose captions share most of the rest of its caption) and each control with
  the clips nearest its own full caption; the residuals (features minus those clips' mean) are pooled and centred,
  the top right singular vector of the pool is the direction a planted subpopulation dominates, and each clip's
  outlier score is its squared projection on it. Separation is the token's clips' mean outlier score over the
  controls': its clips are unlike what the rest of their caption shows. Content words reach it too (remove
  "blue" and the rest of the caption predicts another colour), so it is necessary, not sufficient.
- **coherence**: how much more alike the token's clips are among themselves than their controls are (mean
  pairwise distance of the controls over that of the token's clips): the target is one thing, shown again.
- **concentration**: the share of the token's clips from its most common source.

The token's score is their product; it is flagged when each passes its threshold (`AuditThresholds`); coherence
and concentration are what tell a trigger from a content word (numbers in docs/BENCHMARKS.md). A token whose
clips look like ordinary clips of other captions (a trigger aimed at something the corpus already shows for other
words, in the same way) separates no more than any content word and is out of this method's reach.

Sources are scored by their clips' caption mismatch (residual norm over the corpus median) and by carrying most of
a flagged token's clips. Features are standardised per dimension, each block of features weighted alike
(`standardise`); the audit job passes the clip features of `VideoFeatureNet` (FVD-vidgen's space) and, optionally,
frame features.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import threadpool_limits

WORD = re.compile(r"[a-z0-9']+")


class AuditThresholds(BaseModel):
    """What it takes to flag a token or a source; reported with every audit so a reader can judge the flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_clips: int = Field(3, ge=2, description="a token on fewer clips is not scored (too few to have a spread)")
    max_share: float = Field(0.25, gt=0, le=1, description="a token on more of the corpus is a common word, not a "
                                                          "trigger")
    controls: int = Field(5, ge=1, description="caption controls drawn for each of a token's clips")
    separation: float = Field(2.0, ge=0, description="spectral separation at or above this (content words reach "
                                                                 "it too: it is necessary, not sufficient)...")
    coherence: float = Field(3.0, ge=0, description="...and coherence at or above this...")
    concentration: float = Field(0.5, ge=0, le=1, description="...and this share from one source (at least "
                                 "min_clips clips) flag a token")
    source_share: float = Field(0.5, ge=0, le=1, description="a source carrying this share of a flagged token's "
                                                            "clips is flagged...")
    source_mismatch: float = Field(1.6, ge=0, description="...as is one whose clips' mean caption mismatch (1 = the "
                                                         "corpus median) exceeds this")


@dataclass
class TokenScore:
    """One scored caption token: its clips (indices into the corpus) and the three measures of the signature."""

    token: str
    clips: list[int]
    separation: float
    coherence: float
    concentration: float
    sources: dict[str, int]
    flagged: bool = False

    @property
    def score(self) -> float:
        return self.separation * self.coherence * self.concentration


@dataclass
class SourceScore:
    """One source: its clip count, mean caption mismatch and why it is suspected (empty: it is not)."""

    source: str
    clips: int
    mismatch: float
    reasons: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.mismatch


# --- caption tokens ---


def caption_tokens(caption: str) -> set[str]:
    """Case-folded words and bigrams of a caption."""
    words = WORD.findall(caption.lower())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}


def _token_matrix(captions: list[str]) -> tuple[list[str], np.ndarray]:
    """(vocabulary, (N, V) float32 0/1 matrix of which clip's caption holds which token)."""
    tokens = [caption_tokens(c) for c in captions]
    vocabulary = sorted(set().union(*tokens))
    column = {t: i for i, t in enumerate(vocabulary)}
    matrix = np.zeros((len(captions), len(vocabulary)), np.float32)
    for row, held in enumerate(tokens):
        matrix[row, [column[t] for t in held]] = 1
    return vocabulary, matrix


def _candidates(vocabulary: list[str], matrix: np.ndarray, th: AuditThresholds) -> list[int]:
    """Columns of tokens worth scoring: on enough clips, not common words, and no bigram that holds exactly the
    clips of one of its words (the word says the same and is shorter)."""
    counts = matrix.sum(axis=0)
    column = {t: i for i, t in enumerate(vocabulary)}
    keep = []
    for i, token in enumerate(vocabulary):
        if not th.min_clips <= counts[i] <= th.max_share * len(matrix):
            continue
        if " " in token and any(counts[column[w]] == counts[i] for w in token.split()):
            continue
        keep.append(i)
    return keep


# --- features ---


def standardise(features: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Per-dimension z-scores (constant dimensions become 0) of one (N, D) block or of several side by side, each
    block divided by the square root of its width so a wide one (frame features, 1280) weighs as much as a narrow
    one (clip features, 128)."""
    blocks = [features] if isinstance(features, np.ndarray) else features
    scaled = []
    for block in blocks:
        x = np.asarray(block, np.float64)
        std = x.std(axis=0)
        scaled.append((x - x.mean(axis=0)) / np.where(std > 1e-9, std, 1.0) / np.sqrt(x.shape[1]))
    return np.concatenate(scaled, axis=1)


def _mean_pairwise_distance(x: np.ndarray) -> float:
    if len(x) < 2:
        return 0.0
    squared = (x * x).sum(axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0)
    return float(np.sqrt(d2).sum() / (len(x) * (len(x) - 1)))


def spectral_scores(x: np.ndarray) -> np.ndarray:
    """Tran et al.'s outlier score of each row: its squared projection, after centring, on the top right singular
    vector of the centred rows."""
    centred = x - x.mean(axis=0)
    gram = centred @ centred.T if len(x) <= x.shape[1] else centred.T @ centred  # the smaller square
    top = np.linalg.eigh(gram)[1][:, -1]
    top = centred.T @ top if len(x) <= x.shape[1] else top  # the right singular vector
    return (centred @ (top / max(float(np.linalg.norm(top)), 1e-12))) ** 2


# --- controls: clips that share the rest of a caption ---


def _controls(matrix: np.ndarray, rows: np.ndarray, drop: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """For each of `rows`, the `k` allowed clips whose token sets are closest (Jaccard) to its own without the
    `drop` columns: (len(rows), k) indices."""
    rest = matrix[rows].copy()
    rest[:, drop] = 0
    overlap = rest @ matrix.T  # (R, N)
    union = rest.sum(axis=1, keepdims=True) + matrix.sum(axis=1)[None, :] - overlap
    jaccard = np.where(allowed[None, :], overlap / np.maximum(union, 1), -1.0)
    jaccard[np.arange(len(rows)), rows] = -1.0
    k = min(k, int(allowed.sum()))
    return np.argsort(-jaccard, axis=1, kind="stable")[:, :k]


def _columns_holding(vocabulary: list[str], token: str) -> np.ndarray:
    """The token's column and, for a word, its bigrams' (they name it too): what the rest of a caption is without."""
    return np.array([i for i, t in enumerate(vocabulary) if t == token or (" " not in token and token in t.split())],
                    dtype=int)


def score_token(x: np.ndarray, residuals: np.ndarray, matrix: np.ndarray, vocabulary: list[str], column: int,
                sources: list[str], th: AuditThresholds) -> TokenScore | None:
    """The signature of one token over standardised features `x` and every clip's caption residual (None when too
    few clips lack the token to draw controls from)."""
    token = vocabulary[column]
    rows = np.flatnonzero(matrix[:, column])
    allowed = matrix[:, column] == 0
    if allowed.sum() < th.controls:
        return None
    picks = _controls(matrix, rows, _columns_holding(vocabulary, token), allowed, th.controls)  # (n, k)
    controls = np.unique(picks)
    # the token's clips against the clips sharing the rest of their caption, the controls against their own
    pool = np.concatenate([x[rows] - x[picks].mean(axis=1), residuals[controls]])
    outlier = spectral_scores(pool)
    separation = float(outlier[:len(rows)].mean() / max(outlier[len(rows):].mean(), 1e-12))
    coherence = _mean_pairwise_distance(x[controls]) / max(_mean_pairwise_distance(x[rows]), 1e-12)
    by_source = Counter(sources[i] for i in rows)
    concentration = by_source.most_common(1)[0][1] / len(rows)
    return TokenScore(token, rows.tolist(), separation, coherence, concentration, dict(by_source.most_common()))


def caption_residuals(x: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    """Each clip's features minus the mean of the `k` other clips whose captions are closest to its own (N, D):
    what its caption, as the rest of the corpus shows it, does not explain."""
    nearest = _controls(matrix, np.arange(len(x)), np.array([], dtype=int), np.ones(len(x), bool), k)
    return x - x[nearest].mean(axis=1)


# --- the audit ---


@dataclass
class AuditResult:
    """Every scored token and every source, most suspicious first, with the thresholds they were judged by."""

    tokens: list[TokenScore]
    sources: list[SourceScore]
    thresholds: AuditThresholds

    @property
    def suspected_triggers(self) -> list[TokenScore]:
        return [t for t in self.tokens if t.flagged]

    @property
    def suspected_sources(self) -> list[SourceScore]:
        return [s for s in self.sources if s.reasons]

    @property
    def flagged(self) -> bool:
        return bool(self.suspected_triggers or self.suspected_sources)


def audit_corpus(features: np.ndarray | list[np.ndarray], captions: list[str], sources: list[str],
                 thresholds: AuditThresholds | None = None) -> AuditResult:
    """Score every candidate token and every source of a corpus: `features` (N, D), or several feature blocks of N
    rows each (see `standardise`), a caption and a source per clip."""
    th = thresholds or AuditThresholds()
    rows = {len(b) for b in ([features] if isinstance(features, np.ndarray) else features)}
    if rows != {len(captions)} or len(sources) != len(captions):
        raise ValueError(f"features ({sorted(rows)} rows), captions ({len(captions)}) and sources ({len(sources)}) "
                         "must describe the same clips")
    with threadpool_limits(1):  # small matrices: many BLAS threads cost more than they give (11 s vs 0.4 s, 2 cores)
        return _audit(standardise(features), captions, sources, th)


def _audit(x: np.ndarray, captions: list[str], sources: list[str], th: AuditThresholds) -> AuditResult:
    vocabulary, matrix = _token_matrix(captions)
    residuals = caption_residuals(x, matrix, th.controls)
    tokens = [s for c in _candidates(vocabulary, matrix, th)
              if (s := score_token(x, residuals, matrix, vocabulary, c, sources, th)) is not None]
    for t in tokens:
        t.flagged = (t.separation >= th.separation and t.coherence >= th.coherence
                     and t.concentration >= th.concentration and max(t.sources.values()) >= th.min_clips)
    flagged_words = {t.token for t in tokens if t.flagged and " " not in t.token}
    # a bigram of a flagged word holds some of its clips: it is reported as the word
    tokens = [t for t in tokens if " " not in t.token or not flagged_words & set(t.token.split())]
    tokens.sort(key=lambda t: (-t.flagged, -t.score, t.token))
    return AuditResult(tokens, _score_sources(residuals, sources, tokens, th), th)


def _score_sources(residuals: np.ndarray, sources: list[str], tokens: list[TokenScore],
                   th: AuditThresholds) -> list[SourceScore]:
    """Each source's mean caption mismatch (its clips' residual norms over the corpus median) and its reasons."""
    norms = np.linalg.norm(residuals, axis=1)
    mismatch = norms / max(float(np.median(norms)), 1e-12)
    names = np.asarray(sources)
    scores = []
    for source in sorted(set(sources)):
        mine = names == source
        s = SourceScore(source, int(mine.sum()), float(mismatch[mine].mean()))
        for t in (t for t in tokens if t.flagged):
            if t.sources.get(source, 0) >= th.source_share * len(t.clips):
                s.reasons.append(f"carries {t.sources[source]} of the {len(t.clips)} clips of suspected trigger "
                                 f"{t.token!r}")
        if s.mismatch > th.source_mismatch:
            s.reasons.append(f"its clips look unlike what their captions show elsewhere (mean caption mismatch "
                             f"{s.mismatch:.2f}, threshold {th.source_mismatch})")
        scores.append(s)
    scores.sort(key=lambda s: (-len(s.reasons), -s.mismatch, s.source))
    return scores
