"""``custom_dataset`` functions for the local held-out tasks in this folder.

lm-eval calls them with the TaskManager's metadata as keyword arguments; ``suite.families.lm.lm_eval_run`` passes the
corpus (``source``, ``data_root``, ``split``, ``download``), so no path here depends on the working directory.
"""
from suite.families.lm.lm_eval_run import heldout_dataset


def perplexity(**kwargs):
    return heldout_dataset("perplexity", **kwargs)


def cloze(**kwargs):
    return heldout_dataset("cloze", **kwargs)
