"""The suite's task families, each in one home: its builder(s), the hyperparameters they declare (where they
register) and their evaluation.

- ``vit``: timm ViT image classification (``vit``)
- ``lra``: the six Long Range Arena tasks (``lra``)
- ``lm``: causal language modelling (``lm``) and decoding against L (``lm-decode``)
- ``kernels``: one attention timed at one L, checked first (``kernels``)

Importing this package registers every builder with ``suite.run.builders`` (timm's habit); ``suite.run`` itself
imports no family. A family module imports no torch, model, pandas or data pipeline at its top: the CLI imports
every family to read the declarations and to plan a night in seconds (about 0.2 s, numpy and PIL coming with the
LRA data's status functions); a builder imports what it builds with when it is called.
"""
from suite.families import kernels, lm, lra, vit  # noqa: F401  (registration)
