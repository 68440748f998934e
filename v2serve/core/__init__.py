"""The server core, transport-free and front-end-free: the ServerCore (what the server owns, handed to every
front-end), the DataPlane (the operations on models, typed), what an operation is (``operations``), routes
as data and the dispatcher over every front-end's routes, the repository API and the OpenAPI description."""
