"""The node agent: joining a cluster and, for now, simulated nodes (kwok-style)."""
