"""MetaCAM: ensemble class activation maps, scored by ROAD, chosen by adaptive thresholding."""

__version__ = "0.1.0"

from metacam.errors import MetaCAMError

__all__ = ["MetaCAMError", "__version__"]
