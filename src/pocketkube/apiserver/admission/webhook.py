"""MutatingAdmissionWebhook and ValidatingAdmissionWebhook: the webhooks of Mutating/ValidatingWebhookConfiguration
objects, called for the requests their rules, namespaceSelector and objectSelector pick.

Mutating webhooks run one after another in the order of their configurations' names and their place in them,
each seeing what the previous ones changed (JSON patches); validating webhooks run at once on the final object.
A webhook that cannot be called fails the request (failurePolicy Fail, the default) or is skipped (Ignore).
matchConditions (CEL) are not evaluated: a webhook that has them is treated as failing to be called; and
reinvocationPolicy IfNeeded does not call a webhook a second time. Warnings in responses are not passed on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import jsonpatch

from pocketkube.api.errors import StatusError
from pocketkube.api.selectors import LabelSelector

from .interfaces import CONNECT, CREATE, DELETE, UPDATE, AdmissionAttributes, Handler
from .state import ClusterState
from .webhookclient import Verdict, WebhookCallError, WebhookClient
from .webhookrules import EXEMPT_RESOURCES, Rule, namespace_labels, object_selected, selector

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Webhook:
    name: str
    config: Obj                    # the webhook as configured
    rules: tuple[Rule, ...]
    namespace_selector: LabelSelector
    object_selector: LabelSelector
    fail_open: bool                # failurePolicy Ignore

    @classmethod
    def parse(cls, raw: Obj) -> Webhook:
        return cls(str(raw.get("name", "")), raw, tuple(Rule.parse(r) for r in raw.get("rules") or []),
                   selector(raw.get("namespaceSelector")), selector(raw.get("objectSelector")),
                   raw.get("failurePolicy") == "Ignore")


class _WebhookPlugin(Handler):
    operations = (CREATE, UPDATE, DELETE, CONNECT)
    plural = ""                    # the configuration resource this plugin reads

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.client = WebhookClient(state)
        self._compiled: tuple[tuple[tuple[str, str], ...], list[Webhook]] = ((), [])
        self._configurations = state.info("admissionregistration.k8s.io", "v1", self.plural)

    def webhooks(self) -> list[Webhook]:
        """Every configured webhook, in configuration-name order; parsed again only when one changed."""
        configs = self.state.list(self._configurations)
        if not configs:
            return []
        configs.sort(key=lambda c: c["metadata"]["name"])
        key = tuple((c["metadata"]["name"], c["metadata"].get("resourceVersion", "")) for c in configs)
        if key != self._compiled[0]:
            self._compiled = (key, [Webhook.parse(w) for c in configs for w in c.get("webhooks") or []])
        return self._compiled[1]

    def called_for(self, attrs: AdmissionAttributes) -> list[Webhook]:
        if (attrs.info.group, attrs.info.plural) in EXEMPT_RESOURCES:
            return []
        webhooks = [w for w in self.webhooks() if any(rule.matches(attrs) for rule in w.rules)]
        if not webhooks:
            return []
        namespaces = {}
        if attrs.info.namespaced and attrs.namespace:
            namespaces[attrs.namespace] = self.state.get(self.state.info("", "v1", "namespaces"), "",
                                                         attrs.namespace)
        labels = namespace_labels(attrs, namespaces)
        return [w for w in webhooks if (labels is None or w.namespace_selector.matches(labels))
                and object_selected(w.object_selector, attrs)]

    async def close(self) -> None:
        await self.client.close()

    async def call(self, webhook: Webhook, attrs: AdmissionAttributes) -> Verdict | None:
        """The webhook's verdict; None when it failed and its failurePolicy is Ignore."""
        try:
            if webhook.config.get("matchConditions"):
                raise WebhookCallError("matchConditions (CEL) are not supported by this server")
            if attrs.dry_run and webhook.config.get("sideEffects") not in ("None", "NoneOnDryRun"):
                raise StatusError(400, "BadRequest", f"admission webhook {webhook.name!r} does not support dry run")
            return await self.client.review(webhook.config, attrs)
        except WebhookCallError as err:
            if webhook.fail_open:
                log.warning("failed calling webhook %r (failurePolicy Ignore): %s", webhook.name, err)
                return None
            raise StatusError(500, "InternalError",
                              f'Internal error occurred: failed calling webhook "{webhook.name}": {err}',
                              {"causes": [{"message": f'failed calling webhook "{webhook.name}": {err}'}]}) \
                from None


def _denied(webhook: Webhook, status: Obj) -> StatusError:
    """A rejection as the client sees it (webhookerrors.ToStatusErr): at least 400, named after the webhook."""
    code = int(status.get("code") or 0)
    message = str(status.get("message") or "")
    reason = str(status.get("reason") or "")
    denied_by = f'admission webhook "{webhook.name}" denied the request'
    text = f"{denied_by}: {message or reason}" if (message or reason) else f"{denied_by} without explanation"
    return StatusError(code if code >= 400 else 400, reason, text, status.get("details"))


class MutatingAdmissionWebhook(_WebhookPlugin):
    name = "MutatingAdmissionWebhook"
    plural = "mutatingwebhookconfigurations"

    async def admit(self, attrs: AdmissionAttributes) -> None:
        for webhook in self.called_for(attrs):
            verdict = await self.call(webhook, attrs)
            if verdict is None:
                continue
            if not verdict.allowed:
                raise _denied(webhook, verdict.status)
            if verdict.patch and attrs.object is not None:
                self._apply(webhook, verdict.patch, attrs.object)

    @staticmethod
    def _apply(webhook: Webhook, patch: list[Any], obj: Obj) -> None:
        try:
            patched = jsonpatch.apply_patch(obj, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, ValueError) as err:
            raise StatusError(500, "InternalError", f'Internal error occurred: admission webhook "{webhook.name}" '
                                                    f"returned a patch that cannot be applied: {err}") from None
        if not isinstance(patched, dict):
            raise StatusError(500, "InternalError", f'Internal error occurred: admission webhook "{webhook.name}" '
                                                    "turned the object into something else")
        obj.clear()
        obj.update(patched)


class ValidatingAdmissionWebhook(_WebhookPlugin):
    name = "ValidatingAdmissionWebhook"
    plural = "validatingwebhookconfigurations"

    async def validate(self, attrs: AdmissionAttributes) -> None:
        webhooks = self.called_for(attrs)
        if not webhooks:
            return
        verdicts = await asyncio.gather(*(self.call(w, attrs) for w in webhooks), return_exceptions=True)
        for webhook, verdict in zip(webhooks, verdicts, strict=True):
            if isinstance(verdict, BaseException):
                raise verdict
            if verdict is not None and not verdict.allowed:
                raise _denied(webhook, verdict.status)
