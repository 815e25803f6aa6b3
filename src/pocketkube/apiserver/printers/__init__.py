"""Server-side Table printing (meta.k8s.io/v1 Table), as kube-apiserver's printers do it.

Columns, their types, formats, descriptions and priorities, and every cell, follow upstream's
pkg/printers/internalversion/printers.go, so `kubectl get` output looks as users know it.
"""

from pocketkube.apiserver.printers.base import human_duration
from pocketkube.apiserver.printers.table import column_definitions, to_table

__all__ = ["column_definitions", "human_duration", "to_table"]
