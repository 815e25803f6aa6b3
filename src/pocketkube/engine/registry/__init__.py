"""An OCI Distribution registry (server, storage, token auth) and the client that pulls and pushes images."""
