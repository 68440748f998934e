"""The server core, transport-free: the data plane (the v2 operations on models), the route table that
resolves a request to what it addresses, the router that dispatches and renders errors, the repository
routes and the OpenAPI description."""
