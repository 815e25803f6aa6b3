"""Discovery from the client side: which resources the server serves (custom resources included)."""

from __future__ import annotations

from pocketkube.api.kinds import ResourceInfo
from pocketkube.client.rest import Client


async def preferred_resources(client: Client) -> list[ResourceInfo]:
    """Every top-level resource at its group's preferred version (subresources left out)."""
    out: list[ResourceInfo] = []
    group_versions = [("", "v1")]
    for group in (await client.request("GET", "/apis")).get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("version")
        if preferred:
            group_versions.append((group["name"], preferred))
    for group, version in group_versions:
        path = f"/apis/{group}/{version}" if group else "/api/v1"
        listing = await client.request("GET", path)
        for res in listing.get("resources") or []:
            if "/" in res["name"]:
                continue
            out.append(ResourceInfo(group, version, res["kind"], res["name"], bool(res.get("namespaced")),
                                    short_names=tuple(res.get("shortNames") or ()),
                                    verbs=tuple(res.get("verbs") or ())))
    return out
