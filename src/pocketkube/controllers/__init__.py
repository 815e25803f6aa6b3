"""Controllers: each one an informer + work queue + reconcile(key), level-triggered, built on client/."""
