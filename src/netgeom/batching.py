"""Batch boundaries over n samples, shared by every loop that runs a model in train mode.

A last batch of a single sample joins the batch before it: train-mode BatchNorm cannot normalise
one sample (PyTorch raises "Expected more than 1 value per channel when training"), so a
training set or calibration subset of k * batch_size + 1 samples would crash a BN model partway
through its first epoch; for a model without BN a one-sample step is only noise.
"""

from __future__ import annotations


def batch_spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(lo, hi) of each batch in order: batch_size samples each, the last one the rest, never 1
    sample alone when there is a batch before it to join."""
    spans = [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] == 1:
        spans[-2:] = [(spans[-2][0], n)]
    return spans
