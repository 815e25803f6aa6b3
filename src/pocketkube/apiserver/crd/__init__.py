"""CustomResourceDefinitions (apiextensions.k8s.io/v1) and the custom resources they define.

Modules: ``strategy`` (CRD and custom-resource strategies), ``schema`` (structural schemas: checking,
validation, pruning, defaulting), ``codec`` (decoding request bodies), ``columns`` (Table printing),
``openapi`` (definitions), ``scale`` (the scale subresource), ``resources`` (reading CRD objects) and
``controller`` (names, establishment, serving, cleanup). Kept import-light: the registry, handlers and
printers import the modules they need directly.
"""
