"""Multi-view samplers of the pre-training methods (what each method's views are, on the events).

* :mod:`evssl.data.views.brave`: BraVe's narrow/broad views (:class:`NarrowBroadViews`, :class:`BroadViewSpec`);
* :mod:`evssl.data.views.ecdp`: ECDP's event/RGB views (:class:`ECDPViews`) and the nearest random-resized crop of
  its transfer runs (:class:`RandomResizedCropNearest`).
"""

from evssl.data.views.brave import BroadViewSpec, NarrowBroadViews, Photometric
from evssl.data.views.ecdp import ECDPViews, RandomResizedCropNearest

__all__ = ["BroadViewSpec", "ECDPViews", "NarrowBroadViews", "Photometric", "RandomResizedCropNearest"]
