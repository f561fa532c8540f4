"""The book's methods, one subpackage per paper, all of one shape (the method contract).

Each method lives in ``mvbook/methods/<name>/`` and its modules have the same names and jobs in
every method, so that a reader who knows one knows where everything is in the next:

=================  =========================================================================
``config.py``      ``Config``: a dataclass of the model's and losses' hyper-parameters, named
                   alike across methods (``crop_size``, ``crop_scale``, ``heatmap_sigma``,
                   ``root_joint``, ...); ``Settings`` and ``settings(profile, ...)``: the one
                   profile table (``smoke``, ``quick``, ``full``) of what is trained, for how
                   many steps, with which batches and learning rates. The notebook imports it;
                   it is never written twice.
``data.py``        the data preparation entry ``prepare(...)``: samples of the common format
                   (:mod:`mvbook.data.format`, the studio or a converted dataset) to the
                   method's in-memory sets, cropped through :mod:`mvbook.crops` (one pixel
                   convention and one image normalisation for every method); batches and
                   augmentation.
``model.py``       the networks (``torch.nn.Module``), built on :mod:`mvbook.nn`.
``losses.py``      the paper's losses as functions, and ``make_loss(stage, config, ...)`` giving
                   ``loss_fn(model, batch) -> (loss, logs)`` for :func:`mvbook.train.train`.
``training.py``    ``fit(model, stage, data, ...) -> TrainHistory`` for one training stage, and
                   ``main(profile, data, device, seed, checkpoint_dir, steps)``: the chapter's
                   experiment outside the notebook, runnable on GPUs under ``torchrun``
                   (``python -m mvbook.train mvbook.methods.<name>:main --profile full``).
``evaluation.py``  ``predict(...)`` (per-sample predictions, tensors) and
                   ``evaluate(...) -> dict[str, float]``: the paper's metrics, computed with
                   :mod:`mvbook.metrics`.
=================  =========================================================================

A method may add modules of its own (``weak25d/pose25d.py`` holds the 2.5D representation),
and its ``__init__.py`` re-exports the public names, so ``from mvbook.methods import
learnable_triangulation as lt`` gives ``lt.Config``, ``lt.prepare``, ``lt.fit``,
``lt.evaluate`` and so on. Across methods the same words mean the same things: ``joints2d``
(px of the image the method works in), ``joints3d`` (world mm), ``visibility`` (bool per
joint), ``root_joint`` (index), ``heatmap_sigma`` (heatmap px).

Methods sit above :mod:`mvbook.train`, :mod:`mvbook.nn`, :mod:`mvbook.studio`,
:mod:`mvbook.data` and the shared core (geometry, crops, heatmaps, volumetric, metrics,
skeletons, viz); nothing below imports a method, and no method imports another.

- :mod:`mvbook.methods.learnable_triangulation`: Iskakov et al. 2019 (chapter 10).
- :mod:`mvbook.methods.weak25d`: Iqbal et al. 2020 (chapter 11).
- :mod:`mvbook.methods.mcss`: Mitra et al. 2020 (chapter 20).
- :mod:`mvbook.methods.keypoint_discovery`: Honari et al. (chapter 30).
- :mod:`mvbook.methods.dense_keypoints`: Yu et al. 2021 (chapter 40).
- :mod:`mvbook.methods.selfpose3d`: Srivastav et al. 2024 (chapter 50).
"""
