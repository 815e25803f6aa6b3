"""ServiceAccount controller and root CA publisher, one namespace per key, as upstream.

- ServiceAccountsController (pkg/controller/serviceaccount): every active namespace has the `default`
  ServiceAccount; deleting it makes it come back.
- RootCACertPublisher (pkg/controller/certificates/rootcacertpublisher): every namespace has the
  `kube-root-ca.crt` ConfigMap holding the cluster CA (`ca.crt`) and the usage annotation; edits are
  reverted and deletions undone.
"""

from __future__ import annotations

import logging
from typing import Any

from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)
Obj = dict[str, Any]

DEFAULT_SERVICE_ACCOUNTS = ("default",)
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


def _namespace_terminating(err: APIError) -> bool:
    """A create refused because the namespace is going away (or gone): nothing to retry."""
    causes = (err.body.get("details") or {}).get("causes") or []
    return err.not_found or any(c.get("reason") == "NamespaceTerminating" for c in causes)


class ServiceAccountsController(Controller):
    name = "serviceaccount"

    def setup(self) -> None:
        self.namespaces = self.ctx.informer("", "v1", "namespaces")
        self.service_accounts = self.ctx.informer("", "v1", "serviceaccounts")
        self.sa_info = self.ctx.resource("", "v1", "serviceaccounts")
        self.namespaces.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new))
        self.service_accounts.add_handler(on_delete=self._service_account_deleted)

    def _service_account_deleted(self, sa: Obj) -> None:
        namespace = sa.get("metadata", {}).get("namespace")
        if namespace:
            self.queue.add(namespace)

    async def reconcile(self, key: str) -> None:
        namespace = self.namespaces.store.get(key)
        if namespace is None or (namespace.get("status") or {}).get("phase", "Active") != "Active":
            return  # nothing is created in a namespace that is going away
        failures: list[APIError] = []
        for name in DEFAULT_SERVICE_ACCOUNTS:
            if self.service_accounts.store.get(f"{key}/{name}") is not None:
                continue
            try:
                await self.client.create(self.sa_info, {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": key}}, key)
            except APIError as err:
                if not err.already_exists and not _namespace_terminating(err):
                    failures.append(err)
        if failures:
            raise failures[0]


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"

    def __init__(self, ctx: ControllerContext, *, root_ca: bytes | None = None) -> None:
        # The CA that signs the API server's serving certificate: the one our own client trusts.
        ca = root_ca if root_ca is not None else ctx.client.config.ca_data
        self.root_ca = (ca or b"").decode()
        super().__init__(ctx)
        if not self.root_ca:
            log.error("root CA publisher: the client has no CA data; %s ConfigMaps are not published",
                      ROOT_CA_CONFIGMAP)

    def setup(self) -> None:
        self.namespaces = self.ctx.informer("", "v1", "namespaces")
        self.configmaps = self.ctx.informer("", "v1", "configmaps")
        self.cm_info = self.ctx.resource("", "v1", "configmaps")
        self.namespaces.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new))
        self.configmaps.add_handler(on_update=lambda _old, new: self._configmap_changed(new),
                                    on_delete=self._configmap_changed)

    def _configmap_changed(self, cm: Obj) -> None:
        meta = cm.get("metadata", {})
        if meta.get("name") == ROOT_CA_CONFIGMAP and meta.get("namespace"):
            self.queue.add(meta["namespace"])

    async def reconcile(self, key: str) -> None:
        if not self.root_ca or self.namespaces.store.get(key) is None:
            return
        data = {"ca.crt": self.root_ca}
        cm = self.configmaps.store.get(f"{key}/{ROOT_CA_CONFIGMAP}")
        if cm is None:
            try:
                await self.client.create(self.cm_info, {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": key,
                                 "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                    "data": data}, key)
            except APIError as err:
                if not _namespace_terminating(err):
                    raise
            return
        annotations = cm["metadata"].get("annotations") or {}
        if cm.get("data") == data and annotations.get(DESCRIPTION_ANNOTATION):
            return
        # Put back exactly our data and description; anything else on the object stays as it is.
        updated = {**cm, "data": data,
                   "metadata": {**cm["metadata"], "annotations": {**annotations,
                                                                  DESCRIPTION_ANNOTATION: DESCRIPTION}}}
        try:
            await self.client.update(self.cm_info, updated)
        except APIError as err:
            if not err.not_found:
                raise
