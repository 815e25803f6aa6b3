"""projected (pkg/volume/projected): secrets, configMaps, downward API items and service account tokens
merged into one directory. The ServiceAccount admission plugin's kube-api-access-* volume is one of
these (a token, the kube-root-ca.crt configMap's ca.crt and the namespace)."""

from __future__ import annotations

from pocketkube.client.rest import Client
from pocketkube.kubelet.volumes import configmap_secret, downward
from pocketkube.kubelet.volumes.atomic_writer import FileProjection
from pocketkube.kubelet.volumes.model import Obj, SourceError, aggregate
from pocketkube.kubelet.volumes.tokens import ServiceAccountTokens

DEFAULT_MODE = 0o644
# The token is the user's own: with an fsGroup or a common runAsUser, only that owner (and the group,
# once fsGroup ownership adds g+r) may read it.
TOKEN_MODE_WITH_OWNER = 0o600


async def projected_payload(source: Obj, pod: Obj, client: Client, tokens: ServiceAccountTokens,
                            allocatable: dict[str, str], fs_group: int | None,
                            fs_user: int | None) -> dict[str, FileProjection]:
    """projected's collectData: every source's files in one payload; failures are reported together."""
    default_mode = source.get("defaultMode")
    default_mode = DEFAULT_MODE if default_mode is None else default_mode
    namespace = pod["metadata"].get("namespace") or "default"
    payload: dict[str, FileProjection] = {}
    errors: list[str] = []
    for projection in source.get("sources") or []:
        try:
            payload.update(await _one_source(projection, pod, namespace, client, tokens, allocatable,
                                             default_mode, fs_group, fs_user))
        except SourceError as err:
            errors.append(str(err))
    if errors:
        raise SourceError(aggregate(errors))
    return payload


async def _one_source(projection: Obj, pod: Obj, namespace: str, client: Client, tokens: ServiceAccountTokens,
                      allocatable: dict[str, str], default_mode: int, fs_group: int | None,
                      fs_user: int | None) -> dict[str, FileProjection]:
    if projection.get("secret") is not None:
        ref = projection["secret"]
        optional = bool(ref.get("optional"))
        secret = await configmap_secret.get_secret(client, namespace, ref.get("name") or "", optional)
        return configmap_secret.secret_payload(secret, ref.get("items"), default_mode, optional)
    if projection.get("configMap") is not None:
        ref = projection["configMap"]
        optional = bool(ref.get("optional"))
        configmap = await configmap_secret.get_configmap(client, namespace, ref.get("name") or "", optional)
        return configmap_secret.configmap_payload(configmap, ref.get("items"), default_mode, optional)
    if projection.get("downwardAPI") is not None:
        return downward.collect_data(projection["downwardAPI"].get("items") or [], pod, allocatable, default_mode)
    if projection.get("serviceAccountToken") is not None:
        ref = projection["serviceAccountToken"]
        mode = TOKEN_MODE_WITH_OWNER if fs_user is not None or fs_group is not None else default_mode
        token = await tokens.get(pod, ref.get("audience") or "", ref.get("expirationSeconds"))
        return {ref.get("path") or "": FileProjection(token.encode(), mode, fs_user)}
    kinds = ", ".join(sorted(projection)) or "an empty projection"
    raise SourceError(f"projected volume source {kinds} is not supported on this node")
