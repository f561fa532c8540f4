"""mvbook: an executable textbook on multiview 3D human pose with little or no labelling.

Layers (dependencies point down only):

- ``mvbook.report``, ``mvbook.cli``: run the book with papermill, collect results, export
  HTML (``mvbook.report``: ``options``, ``runner``, ``verify``, ``chapter``, ``folder``,
  ``pages``, ``environment``, ``cli``; its docstring says which does what).
  ``python -m mvbook`` is the ``mvbook`` command.
- ``mvbook.methods.<paper>``: one module per paper.
- ``mvbook.train``, ``mvbook.nn``: the generic training loop, backbones and heads.
- ``mvbook.studio``, ``mvbook.data``: the embedded synthetic studio and real-data readers.
- ``mvbook.geometry``, ``mvbook.heatmaps``, ``mvbook.volumetric``, ``mvbook.metrics``,
  ``mvbook.skeletons``: the shared core, pure functions on tensors.
"""

__version__ = "0.1.0"
