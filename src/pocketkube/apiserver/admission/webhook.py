"""The places of MutatingAdmissionWebhook and ValidatingAdmissionWebhook in the chain.

Calling webhooks (reading Mutating/ValidatingWebhookConfiguration objects, AdmissionReview over HTTPS) is
later work; it plugs in here as dispatchers, so the chain's order stays upstream's. With no dispatcher
registered both plugins admit everything unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .interfaces import CONNECT, CREATE, DELETE, UPDATE, AdmissionAttributes, Handler

Dispatcher = Callable[[AdmissionAttributes], Awaitable[None]]


class _WebhookHook(Handler):
    operations = (CREATE, UPDATE, DELETE, CONNECT)

    def __init__(self) -> None:
        self.dispatchers: list[Dispatcher] = []

    def register(self, dispatcher: Dispatcher) -> None:
        self.dispatchers.append(dispatcher)

    async def _dispatch(self, attrs: AdmissionAttributes) -> None:
        for dispatcher in self.dispatchers:
            await dispatcher(attrs)


class MutatingAdmissionWebhook(_WebhookHook):
    name = "MutatingAdmissionWebhook"

    async def admit(self, attrs: AdmissionAttributes) -> None:
        await self._dispatch(attrs)


class ValidatingAdmissionWebhook(_WebhookHook):
    name = "ValidatingAdmissionWebhook"

    async def validate(self, attrs: AdmissionAttributes) -> None:
        await self._dispatch(attrs)
