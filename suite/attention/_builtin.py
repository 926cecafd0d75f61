"""Imports every built-in attention module so that its ``@register_attention`` runs."""
from suite.attention import ea  # noqa: F401
from suite.attention import softmax  # noqa: F401
from suite.attention import ea_exact  # noqa: F401
from suite.attention import linear  # noqa: F401
from suite.attention import based  # noqa: F401
from suite.attention import aft  # noqa: F401
from suite.attention import retention  # noqa: F401
from suite.attention import mamba  # noqa: F401
