"""Old home of NIR's discrete neurons, now ``dpap_deploy.graph.nir_neurons`` (graph/ checks its
LI forms with them, and graph/ imports nothing above it). Kept importable for its last caller
(tests/test_review_fixes.py)."""
from ..graph.nir_neurons import (NEURONS, STATEFUL, UNIT_GAIN_TOLERANCE, Discrete,  # noqa: F401
                                 decay, discretise)
