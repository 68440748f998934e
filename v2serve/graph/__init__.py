"""The transport-free core: routing, the v2 operations and the model server lifecycle."""
