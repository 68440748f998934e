"""Front-ends: each is a list of routes over the server core, rendered in its API's shape (v2 itself,
TorchServe, KServe v1, Ingrain), so that one model answers the same through all of them."""
