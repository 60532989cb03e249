"""MetaCAM: ensemble class activation maps, scored by ROAD, chosen by adaptive thresholding.

The public names are imported lazily so that light users (the results schema,
the analysis, ``metacam --help``) do not pay for importing torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "MetaCAMError": "metacam.errors",
    "load_model": "metacam.models",
    "ModelBundle": "metacam.models",
    "load_images": "metacam.images",
    "member_cams": "metacam.cams",
    "MEMBERS": "metacam.cams",
    "layer_member": "metacam.cams",
    "model_member": "metacam.cams",
    "metacam_map": "metacam.ensemble",
    "top_k_mask": "metacam.ensemble",
    "impute": "metacam.evaluation.imputation",
    "road": "metacam.evaluation.roadscore",
    "adaptive_threshold": "metacam.evaluation.adaptive",
    "Probe": "metacam.evaluation.roadscore",
    "Evaluator": "metacam.evaluation.engine",
    "map_metric": "metacam.evaluation.registry",
    "model_metric": "metacam.evaluation.registry",
    "METRICS": "metacam.evaluation.registry",
    "DEFAULT_GROUPS": "metacam.groups",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metacam' has no attribute {name!r}")
