"""The kubelet's streaming protocols: container logs, exec/attach sessions and port-forward over
channel.k8s.io WebSockets and SPDY/3.1, as kubectl and the client libraries speak them."""
