"""kube-scheduler: scheduling queue, cache with assumed pods, framework with plugins, profiles."""
