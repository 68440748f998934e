"""Serving graphs: the declarative spec, its compiler, and the runtime steps (router, flow, ensemble,
parallel) that call the core's data plane for their model steps."""
