"""The evaluation engine: how MetaCAM scores saliency maps.

``metacam explain``, the sweep and the API score maps only through this package:

* :mod:`~metacam.evaluation.engine` — the one flow: candidate maps at the k grid,
  in-sample ROAD, k*, then every metric on the chosen (k*) and plain (k = 100) maps
  (:class:`~metacam.evaluation.engine.Evaluator`, whose result knows its columns).
* :mod:`~metacam.evaluation.registry` — the metric registry (one table read by the
  results schema, the sweep's rows, explain's table and the dataset metadata) and the
  plug-in decorators ``map_metric`` / ``model_metric``; imports no torch.
* :mod:`~metacam.evaluation.builtin` — the built-in metrics, registered the same way:
  ROAD (held-out), deletion/insertion AUC, sparseness (Gini), complexity (entropy).
* :mod:`~metacam.evaluation.roadscore` — ROAD, batched, and the :class:`Probe`
  (a batch's model, images, targets and clean probabilities) every metric runs against.
* :mod:`~metacam.evaluation.adaptive` — adaptive thresholding (k* = argmax ROAD).
* :mod:`~metacam.evaluation.deletion` — deletion and insertion AUC (RISE).
* :mod:`~metacam.evaluation.imputation` — ROAD's noisy linear imputation, with its
  solvers :mod:`~metacam.evaluation._impute_native` (a C kernel, CPU) and
  :mod:`~metacam.evaluation._multigrid` (torch, CUDA and fallback).

Importing this package imports nothing else (the schema reads the registry without torch).
"""
