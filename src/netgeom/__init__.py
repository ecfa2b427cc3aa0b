"""netgeom: the geometry of trained neural networks, as a DVC pipeline and as a library.

Where to start
--------------
* The pipeline: ``make repro`` (``netgeom repro``) trains the grid of params.yaml and runs every
  study into artifacts/ and reports/; ``netgeom --help`` lists the stages, which also run one
  at a time (``netgeom train --width 64 --noise 0.2``, ``netgeom smoothness ...``).
* A trained run in a notebook: ``run = netgeom.open_run("mlp_w64-n0.2-r0")`` (a folder under
  artifacts/runs/) gives ``run.info`` (run.json), ``run.history``, ``run.epochs``,
  ``run.model(epoch=None)`` (an eval-mode ``nn.Module``), ``run.state(epoch=None)`` and
  ``run.data``: the exact split it trained on (``x``, ``y``, ``clean``, ``noisy``, ``val``,
  ``test``).
* The studies are plain functions of an ``nn.Module`` and tensors, for the runs' models and for
  your own alike (inputs are (N, *input_shape), labels (N,) integers):

  - ``netgeom.studies.smoothness.compute_metric(model, x, targets, metric,
    normalization="crossentropy", *, progress=None, **options)``: a per-sample input-space
    metric, e.g. ``"jacobian_frobenius"`` (the input-gradient norm of the loss).
  - ``netgeom.studies.regions.study_paths(model, paths, *, eps=1e-9, batch_size=256,
    check_end=True, progress=None)``: exact linear regions crossed along closed paths of
    shifted copies of inputs (``netgeom.studies.input_paths.make_paths(inputs, n_anchors=8,
    radius=4)``), for ReLU nets; ``.crossings`` per path.
  - ``netgeom.studies.interpolation.interpolation_curve(model, state_a, state_b, eval_sets, *,
    n=50, bn="recompute", calibration_inputs=None, ..., progress=None)``: loss and accuracy
    along the straight line between two state dicts (e.g. init -> final), on
    ``eval_sets = {"test": (x, y)}``.
  - ``netgeom.studies.hyperplanes.layer_statistics(model, state, init_state=None,
    with_linear=False)``: per layer, the mean cosine of its hyperplanes' normals with the
    diagonal (``mean``) and the fraction tilted away from it (``mass``; 0.5 = unbiased).

  ``progress=False`` silences a study's bar; by default (None) bars show on a terminal or in a
  notebook, never under ``--quiet`` or with ``CI``/``NETGEOM_QUIET`` set.

``import netgeom`` is light (no torch): ``open_run`` and its classes load on first use.
"""

__all__ = ["NotebookRun", "RunData", "open_run"]

_LAZY = frozenset(__all__)  # from netgeom.notebook, which imports torch


def __getattr__(name: str):
    if name in _LAZY:
        from netgeom import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
