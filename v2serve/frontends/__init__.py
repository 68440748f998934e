"""Front-ends beside v2: each is a list of routes over the same router and data plane, so that one model
answers the same through all of them (``torchserve``, ``kserve_v1``)."""
