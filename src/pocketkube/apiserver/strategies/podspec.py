"""PodSpec and PodTemplateSpec defaulting and validation, shared by Pods and every workload kind.

Defaults follow pkg/apis/core/v1/defaults.go (SetDefaults_PodSpec and the nested SetDefaults_* functions);
the Pod-only defaults (SetDefaults_Pod) are in core_pods.py. Validation follows the commonly hit rules of
pkg/apis/core/validation/validation.go (ValidatePodSpec, validateContainers, validateVolumes ...).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause

from . import _fields as f

Obj = dict[str, Any]

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
TERMINATION_MESSAGE_POLICIES = ["File", "FallbackToLogsOnError"]
TOLERATION_OPERATORS = ["Equal", "Exists"]
TAINT_EFFECTS = ["NoExecute", "NoSchedule", "PreferNoSchedule"]
FS_GROUP_CHANGE_POLICIES = ["Always", "OnRootMismatch"]
SUPPLEMENTAL_GROUPS_POLICIES = ["Merge", "Strict"]
SECCOMP_TYPES = ["Localhost", "RuntimeDefault", "Unconfined"]
PROC_MOUNT_TYPES = ["Default", "Unmasked"]
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
# Container fields an ephemeral container may not set (upstream's allowedEphemeralContainerFields: false).
EPHEMERAL_FORBIDDEN_FIELDS = ("ports", "resources", "resizePolicy", "restartPolicy", "restartPolicyRules",
                              *PROBES, "lifecycle")
# The volume sources a Volume may carry (exactly one).
VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi",
    "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc",
    "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected",
    "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
DEFAULT_MODE = 0o644  # 420: Secret, ConfigMap, DownwardAPI and projected volume files


# --- defaults ------------------------------------------------------------------------------------

def image_tag(image: str) -> str:
    """The tag parsers.ParseImageName finds: 'latest' when neither tag nor digest is given."""
    if "@" in image:
        name, _, _ = image.partition("@")
        last = name.rsplit("/", 1)[-1]
        return last.rsplit(":", 1)[1] if ":" in last else ""
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def _default_http_get(action: Obj | None) -> None:
    if isinstance(action, dict):
        if not action.get("path"):
            action["path"] = "/"
        if not action.get("scheme"):
            action["scheme"] = "HTTP"


def _default_probe(probe: Obj | None) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        if not probe.get(key):
            probe[key] = value
    _default_http_get(probe.get("httpGet"))
    grpc = probe.get("grpc")
    if isinstance(grpc, dict) and grpc.get("service") is None:
        # v1.GRPCAction.Service is declaratively defaulted to "".
        grpc["service"] = ""


def _default_field_ref(ref: Obj | None) -> None:
    if isinstance(ref, dict) and not ref.get("apiVersion"):
        ref["apiVersion"] = "v1"


def _default_resource_field_ref(ref: Obj | None) -> None:
    # Divisor is a Quantity value, not a pointer, upstream: every object it decodes and encodes again shows
    # an unset one as "0" (which the kubelet reads as 1). Clients that send objects back (kubectl rollout undo
    # copies a ReplicaSet's template) then agree with what is stored.
    if isinstance(ref, dict) and ref.get("divisor") is None:
        ref["divisor"] = "0"


def _default_downward_items(items: list[Any] | None) -> None:
    for item in items or []:
        if isinstance(item, dict):
            _default_field_ref(item.get("fieldRef"))
            _default_resource_field_ref(item.get("resourceFieldRef"))


def default_container(c: Obj) -> None:
    """SetDefaults_Container plus the nested defaults of its ports, probes, handlers and env."""
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if image_tag(str(c.get("image", ""))) == "latest" else "IfNotPresent"
    if not c.get("terminationMessagePath"):
        c["terminationMessagePath"] = "/dev/termination-log"
    if not c.get("terminationMessagePolicy"):
        c["terminationMessagePolicy"] = "File"
    if c.get("resources") is None:
        c["resources"] = {}  # a struct value upstream, so always there: what clients send back agrees
    for port in c.get("ports") or []:
        if isinstance(port, dict) and not port.get("protocol"):
            port["protocol"] = "TCP"
    for probe in PROBES:
        _default_probe(c.get(probe))
    for hook in ("postStart", "preStop"):
        handler = (c.get("lifecycle") or {}).get(hook)
        if isinstance(handler, dict):
            _default_http_get(handler.get("httpGet"))
    for env in c.get("env") or []:
        if isinstance(env, dict):
            _default_field_ref((env.get("valueFrom") or {}).get("fieldRef"))
            _default_resource_field_ref((env.get("valueFrom") or {}).get("resourceFieldRef"))


def _default_volume(vol: Obj) -> None:
    if not any(vol.get(src) is not None for src in VOLUME_SOURCES):
        vol["emptyDir"] = {}
    for key in ("secret", "configMap", "downwardAPI", "projected"):
        src = vol.get(key)
        if isinstance(src, dict) and src.get("defaultMode") is None:
            src["defaultMode"] = DEFAULT_MODE
    _default_downward_items((vol.get("downwardAPI") or {}).get("items"))
    for source in (vol.get("projected") or {}).get("sources") or []:
        token = source.get("serviceAccountToken")
        if isinstance(token, dict) and token.get("expirationSeconds") is None:
            token["expirationSeconds"] = 3600
        _default_downward_items((source.get("downwardAPI") or {}).get("items"))
    host_path = vol.get("hostPath")
    if isinstance(host_path, dict) and host_path.get("type") is None:
        host_path["type"] = ""
    claim_spec = ((vol.get("ephemeral") or {}).get("volumeClaimTemplate") or {}).get("spec")
    if isinstance(claim_spec, dict):
        default_pvc_spec(claim_spec)
    image = vol.get("image")
    if isinstance(image, dict) and not image.get("pullPolicy"):
        image["pullPolicy"] = "Always" if image_tag(str(image.get("reference", ""))) == "latest" else "IfNotPresent"


def default_pvc_spec(spec: Obj) -> None:
    if not spec.get("volumeMode"):
        spec["volumeMode"] = "Filesystem"


def default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and everything nested in a PodSpec (templates get exactly this)."""
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    # serviceAccount is the deprecated alias of serviceAccountName: v1 conversion reads it when the new
    # field is empty and always writes it back from the new one.
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    for kind in CONTAINER_KINDS:
        for c in spec.get(kind) or []:
            if isinstance(c, dict):
                default_container(c)
    for vol in spec.get("volumes") or []:
        if isinstance(vol, dict):
            _default_volume(vol)


def default_pod_template(template: Obj | None) -> None:
    if isinstance(template, dict):
        spec = template.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)


# --- validation ----------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _validate_ports(ports: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"{path}[{i}]"
        if not isinstance(port, dict):
            errs.append(v.invalid_value(p, port, "must be an object"))
            continue
        name = port.get("name") or ""
        if name:
            errs.extend(v.invalid_value(f"{p}.name", name, m) for m in v.is_valid_port_name(name))
            if name in names:
                errs.append(v.duplicate(f"{p}.name", name))
            names.add(name)
        container_port = port.get("containerPort")
        if not container_port:
            errs.append(v.required(f"{p}.containerPort"))
        else:
            errs.extend(v.invalid_value(f"{p}.containerPort", container_port, m)
                        for m in f.port_num_errors(container_port))
        host_port = port.get("hostPort")
        if host_port:
            errs.extend(v.invalid_value(f"{p}.hostPort", host_port, m) for m in f.port_num_errors(host_port))
        protocol = port.get("protocol") or ""
        if not protocol:
            errs.append(v.required(f"{p}.protocol"))
        elif protocol not in PROTOCOLS:
            errs.append(v.not_supported(f"{p}.protocol", protocol, PROTOCOLS))
    return errs


def _validate_resources(resources: Any, path: str) -> list[Cause]:
    """ValidateContainerResourceRequirements: non-negative quantities and requests <= limits."""
    if not isinstance(resources, dict):
        return []
    errs: list[Cause] = []
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    parsed: dict[str, dict[str, Any]] = {"limits": {}, "requests": {}}
    for section, values in (("limits", limits), ("requests", requests)):
        for name, raw in values.items():
            qty = f.quantity(raw)
            key_path = f"{path}.{section}[{name}]"
            if qty is None:
                # The JSON decoder refuses such a quantity before validation; report it the same way.
                errs.append(v.invalid_value(key_path, raw, "quantities must match the regular expression "
                                                           "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
                continue
            if qty.sign() < 0:
                errs.append(v.invalid_value(key_path, str(qty), v.IS_NEGATIVE_ERROR_MSG))
            parsed[section][name] = qty
    for name, req in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and limit < req and not name.startswith("hugepages-"):
            errs.append(v.invalid_value(f"{path}.requests[{name}]", str(req),
                                        f"must be less than or equal to {name} limit of {limit}"))
    return errs


def _validate_probe(probe: Any, path: str, *, must_succeed_once: bool) -> list[Cause]:
    if not isinstance(probe, dict):
        return []
    errs: list[Cause] = []
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(h) is not None]
    if not handlers:
        errs.append(v.required(path, "must specify a handler type"))
    elif len(handlers) > 1:
        errs.append(v.forbidden(f"{path}.{handlers[1]}", "may not specify more than 1 handler type"))
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                "failureThreshold"):
        errs.extend(f.non_negative(probe.get(key), f"{path}.{key}"))
    if must_succeed_once and probe.get("successThreshold") not in (None, 1):
        errs.append(v.invalid_value(f"{path}.successThreshold", probe["successThreshold"], "must be 1"))
    return errs


def _validate_env(env: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, var in enumerate(env):
        p = f"{path}[{i}]"
        name = (var or {}).get("name") or ""
        if not name:
            errs.append(v.required(f"{p}.name"))
        else:
            errs.extend(v.invalid_value(f"{p}.name", name, m) for m in v.is_relaxed_env_var_name(name))
        value_from = (var or {}).get("valueFrom")
        if value_from is not None:
            sources = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef")
                       if value_from.get(k) is not None]
            if not sources:
                errs.append(v.invalid_value(f"{p}.valueFrom", "", "must specify one of: `fieldRef`, "
                                            "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
            elif len(sources) > 1:
                errs.append(v.invalid_value(f"{p}.valueFrom", "", "may not have more than one field specified "
                                            "at a time"))
            elif var.get("value"):
                errs.append(v.invalid_value(f"{p}.valueFrom", "", "may not be specified when `value` is not "
                                            "empty"))
    return errs


def _validate_container(c: Obj, path: str, volumes: set[str], *, kind: str) -> list[Cause]:
    errs: list[Cause] = []
    image = c.get("image") or ""
    # Ephemeral containers and pod templates share the rule: the image is required.
    if not image:
        errs.append(v.required(f"{path}.image"))
    elif image != image.strip():
        errs.append(v.invalid_value(f"{path}.image", image, "must not have leading or trailing whitespace"))
    policy = c.get("imagePullPolicy") or ""
    if not policy:
        errs.append(v.required(f"{path}.imagePullPolicy"))
    elif policy not in PULL_POLICIES:
        errs.append(v.not_supported(f"{path}.imagePullPolicy", policy, PULL_POLICIES))
    tm_policy = c.get("terminationMessagePolicy") or ""
    if not tm_policy:
        errs.append(v.required(f"{path}.terminationMessagePolicy"))
    elif tm_policy not in TERMINATION_MESSAGE_POLICIES:
        errs.append(v.not_supported(f"{path}.terminationMessagePolicy", tm_policy, TERMINATION_MESSAGE_POLICIES))
    errs.extend(_validate_ports(c.get("ports") or [], f"{path}.ports"))
    errs.extend(_validate_env(c.get("env") or [], f"{path}.env"))
    errs.extend(_validate_resources(c.get("resources"), f"{path}.resources"))
    errs.extend(_validate_container_security_context(c.get("securityContext"), f"{path}.securityContext"))
    # Sidecars (restartable init containers) may have probes; plain init containers may not.
    sidecar = kind == "initContainers" and c.get("restartPolicy") == "Always"
    if kind == "ephemeralContainers":
        errs.extend(_validate_ephemeral_only(c, path))
    for probe in PROBES:
        if c.get(probe) is None or kind == "ephemeralContainers":
            continue
        if kind == "initContainers" and not sidecar:
            errs.append(v.forbidden(f"{path}.{probe}", "may not be set for init containers without "
                                                        "restartPolicy=Always"))
        else:
            errs.extend(_validate_probe(c[probe], f"{path}.{probe}",
                                        must_succeed_once=probe != "readinessProbe"))
    if c.get("restartPolicy") is not None and kind == "containers":  # ephemeral ones: refused above
        errs.append(v.forbidden(f"{path}.restartPolicy", "may not be set for non-init containers"))
    elif kind == "initContainers" and c.get("restartPolicy") not in (None, "Always"):
        errs.append(v.not_supported(f"{path}.restartPolicy", c["restartPolicy"], ["Always"]))
    mount_paths: set[str] = set()
    for j, mount in enumerate(c.get("volumeMounts") or []):
        mp = f"{path}.volumeMounts[{j}]"
        name = (mount or {}).get("name") or ""
        if not name:
            errs.append(v.required(f"{mp}.name"))
        elif name not in volumes:
            errs.append(v.not_found(f"{mp}.name", name))
        mount_path = (mount or {}).get("mountPath") or ""
        if not mount_path:
            errs.append(v.required(f"{mp}.mountPath"))
        elif mount_path in mount_paths:
            errs.append(v.invalid_value(f"{mp}.mountPath", mount_path, "must be unique"))
        mount_paths.add(mount_path)
    return errs


def _validate_ephemeral_only(c: Obj, path: str) -> list[Cause]:
    """What an ephemeral container may not have: it is for debugging, never part of the workload (no ports,
    probes, lifecycle hooks, resources or restart policy; no subPath mounts, whose bind mounts would outlive it)."""
    errs = [v.forbidden(f"{path}.{name}", "cannot be set for an Ephemeral Container")
            for name in EPHEMERAL_FORBIDDEN_FIELDS if c.get(name) not in (None, [], {})]
    for j, mount in enumerate(c.get("volumeMounts") or []):
        for name in ("subPath", "subPathExpr"):
            if isinstance(mount, dict) and mount.get(name):
                errs.append(v.forbidden(f"{path}.volumeMounts[{j}].{name}", "cannot be set for an Ephemeral Container"))
    return errs


def validate_ephemeral_containers_update(new: Obj, old: Obj) -> list[Cause]:
    """ValidatePodEphemeralContainersUpdate's own rules: a target must be one of the pod's containers, and
    ephemeral containers already in the pod stay exactly as they are."""
    errs: list[Cause] = []
    regular = {c.get("name") for kind in ("initContainers", "containers") for c in new.get(kind) or []
               if isinstance(c, dict)}
    added = [c for c in new.get("ephemeralContainers") or [] if isinstance(c, dict)]
    for i, c in enumerate(added):
        target = c.get("targetContainerName")
        if target and target not in regular:
            errs.append(v.not_found(f"spec.ephemeralContainers[{i}].targetContainerName", target))
    by_name = {c.get("name"): c for c in added}
    for existing in old.get("ephemeralContainers") or []:
        name = existing.get("name")
        if name not in by_name:
            errs.append(v.forbidden("spec.ephemeralContainers", f"existing ephemeral containers {json.dumps(name)} "
                                                                "may not be removed"))
        elif by_name[name] != existing:
            errs.append(v.forbidden("spec.ephemeralContainers", f"existing ephemeral containers {json.dumps(name)} "
                                                                "may not be changed"))
    return errs


def _validate_volumes(volumes: list[Any], path: str) -> tuple[list[Cause], set[str]]:
    errs: list[Cause] = []
    names: set[str] = set()
    for i, vol in enumerate(volumes):
        p = f"{path}[{i}]"
        if not isinstance(vol, dict):
            errs.append(v.invalid_value(p, vol, "must be an object"))
            continue
        name = vol.get("name") or ""
        if not name:
            errs.append(v.required(f"{p}.name"))
        else:
            errs.extend(f.dns_label_causes(name, f"{p}.name"))
            if name in names:
                errs.append(v.duplicate(f"{p}.name", name))
            names.add(name)
        sources = [s for s in VOLUME_SOURCES if vol.get(s) is not None]
        if not sources:
            errs.append(v.required(p, "must specify a volume type"))
        elif len(sources) > 1:
            errs.append(v.forbidden(f"{p}.{sources[1]}", "may not specify more than 1 volume type"))
        for key in ("secret", "configMap"):
            src = vol.get(key)
            if isinstance(src, dict):
                errs.extend(_validate_mode(src.get("defaultMode"), f"{p}.{key}.defaultMode"))
        if isinstance(vol.get("secret"), dict) and not vol["secret"].get("secretName"):
            errs.append(v.required(f"{p}.secret.secretName"))
        if isinstance(vol.get("persistentVolumeClaim"), dict) and not vol["persistentVolumeClaim"].get("claimName"):
            errs.append(v.required(f"{p}.persistentVolumeClaim.claimName"))
        if isinstance(vol.get("hostPath"), dict) and not vol["hostPath"].get("path"):
            errs.append(v.required(f"{p}.hostPath.path"))
    return errs, names


def _validate_mode(mode: Any, path: str) -> list[Cause]:
    if mode is not None and (_int(mode) is None or not 0 <= mode <= 0o777):
        return [v.invalid_value(path, mode, "must be a number between 0 and 0777 (octal), both inclusive")]
    return []


def _validate_tolerations(tolerations: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, tol in enumerate(tolerations):
        p = f"{path}[{i}]"
        tol = tol or {}
        key, op, effect = tol.get("key") or "", tol.get("operator") or "", tol.get("effect") or ""
        if key:
            errs.extend(v.validate_label_name(key, f"{p}.key"))
        if not key and op != "Exists":
            errs.append(v.invalid_value(f"{p}.operator", op,
                                        "operator must be Exists when `key` is empty, which means \"match all "
                                        "values and all keys\""))
        if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(v.invalid_value(f"{p}.effect", effect,
                                        "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op in ("", "Equal"):
            errs.extend(v.invalid_value(f"{p}.operator", tol.get("value", ""), m)
                        for m in v.is_label_value(str(tol.get("value") or "")))
        elif op == "Exists":
            if tol.get("value"):
                errs.append(v.invalid_value(f"{p}.operator", tol["value"],
                                            "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(v.not_supported(f"{p}.operator", op, TOLERATION_OPERATORS))
        if effect and effect not in TAINT_EFFECTS:
            errs.append(v.not_supported(f"{p}.effect", effect, TAINT_EFFECTS))
    return errs


def _validate_ids(sc: Obj, path: str) -> list[Cause]:
    """runAsUser and runAsGroup, in a pod's or a container's security context."""
    errs: list[Cause] = []
    for key, check in (("runAsUser", v.is_valid_user_id), ("runAsGroup", v.is_valid_group_id)):
        value = _int(sc.get(key))
        if value is not None:
            errs.extend(v.invalid_value(f"{path}.{key}", value, msg) for msg in check(value))
    return errs


def _validate_seccomp(profile: Any, path: str) -> list[Cause]:
    """validateSeccompProfileField."""
    if not isinstance(profile, dict):
        return []
    kind = profile.get("type") or ""
    local = profile.get("localhostProfile")
    if not kind:
        return [v.required(f"{path}.type")]
    if kind not in SECCOMP_TYPES:
        return [v.not_supported(f"{path}.type", kind, SECCOMP_TYPES)]
    if kind == "Localhost" and not local:
        return [v.required(f"{path}.localhostProfile", "must be set when seccomp type is Localhost")]
    if kind != "Localhost" and local is not None:
        return [v.invalid_value(f"{path}.localhostProfile", local, "can only be set when seccomp type is Localhost")]
    return []


def _validate_pod_security_context(spec: Obj, path: str) -> list[Cause]:
    """validatePodSpecSecurityContext. Upstream's internal types keep hostPID and shareProcessNamespace in
    the security context, hence the path of their conflict."""
    sc = spec.get("securityContext")
    sc = sc if isinstance(sc, dict) else {}
    errs = _validate_ids(sc, path)
    fs_group = _int(sc.get("fsGroup"))
    if fs_group is not None:
        errs.extend(v.invalid_value(f"{path}.fsGroup", fs_group, msg) for msg in v.is_valid_group_id(fs_group))
    for i, gid in enumerate(sc.get("supplementalGroups") or []):
        if _int(gid) is not None:
            errs.extend(v.invalid_value(f"{path}.supplementalGroups[{i}]", gid, msg) for msg in v.is_valid_group_id(gid))
    if spec.get("shareProcessNamespace") and spec.get("hostPID"):
        errs.append(v.invalid_value(f"{path}.shareProcessNamespace", True,
                                    "ShareProcessNamespace and HostPID cannot both be enabled"))
    for key, allowed in (("fsGroupChangePolicy", FS_GROUP_CHANGE_POLICIES),
                         ("supplementalGroupsPolicy", SUPPLEMENTAL_GROUPS_POLICIES)):
        if sc.get(key) is not None and sc[key] not in allowed:
            errs.append(v.not_supported(f"{path}.{key}", sc[key], allowed))
    errs.extend(_validate_seccomp(sc.get("seccompProfile"), f"{path}.seccompProfile"))
    return errs


def _validate_container_security_context(sc: Any, path: str) -> list[Cause]:
    """ValidateSecurityContext's rules for Linux containers."""
    if not isinstance(sc, dict):
        return []
    errs = _validate_ids(sc, path)
    escalation_off = sc.get("allowPrivilegeEscalation") is False
    if escalation_off and sc.get("privileged"):
        errs.append(v.invalid_value(path, sc, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"))
    added = (sc.get("capabilities") or {}).get("add") or []
    if escalation_off and "CAP_SYS_ADMIN" in added:
        errs.append(v.invalid_value(path, sc, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` "
                                              "CAP_SYS_ADMIN"))
    if sc.get("procMount") is not None and sc["procMount"] not in PROC_MOUNT_TYPES:
        errs.append(v.not_supported(f"{path}.procMount", sc["procMount"], PROC_MOUNT_TYPES))
    errs.extend(_validate_seccomp(sc.get("seccompProfile"), f"{path}.seccompProfile"))
    return errs


def validate_pod_spec(spec: Any, path: str) -> list[Cause]:
    """ValidatePodSpec's commonly hit rules."""
    if not isinstance(spec, dict):
        return [v.required(path)]
    errs, volumes = _validate_volumes(spec.get("volumes") or [], f"{path}.volumes")
    containers = spec.get("containers") or []
    if not containers:
        errs.append(v.required(f"{path}.containers"))
    seen: set[str] = set()
    for kind in CONTAINER_KINDS:
        for i, c in enumerate(spec.get(kind) or []):
            cp = f"{path}.{kind}[{i}]"
            if not isinstance(c, dict):
                errs.append(v.invalid_value(cp, c, "must be an object"))
                continue
            name = c.get("name") or ""
            if not name:
                errs.append(v.required(f"{cp}.name"))
            else:
                errs.extend(f.dns_label_causes(name, f"{cp}.name"))
                if name in seen:
                    errs.append(v.duplicate(f"{cp}.name", name))
                seen.add(name)
            errs.extend(_validate_container(c, cp, volumes, kind=kind))
    restart = spec.get("restartPolicy") or ""
    if not restart:
        errs.append(v.required(f"{path}.restartPolicy"))
    elif restart not in RESTART_POLICIES:
        errs.append(v.not_supported(f"{path}.restartPolicy", restart, RESTART_POLICIES))
    dns = spec.get("dnsPolicy") or ""
    if not dns:
        errs.append(v.required(f"{path}.dnsPolicy"))
    elif dns not in DNS_POLICIES:
        errs.append(v.not_supported(f"{path}.dnsPolicy", dns, DNS_POLICIES))
    elif dns == "None" and spec.get("dnsConfig") is None:
        errs.append(v.required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
    errs.extend(f.non_negative(spec.get("terminationGracePeriodSeconds"),
                               f"{path}.terminationGracePeriodSeconds"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (_int(deadline) is None or not 1 <= deadline <= 2**31 - 1):
        errs.append(v.invalid_value(f"{path}.activeDeadlineSeconds", deadline,
                                    v.inclusive_range_error(1, 2**31 - 1)))
    for key, validate in (("serviceAccountName", f.dns_subdomain_causes), ("nodeName", f.dns_subdomain_causes),
                          ("hostname", f.dns_label_causes), ("subdomain", f.dns_label_causes)):
        if spec.get(key):
            errs.extend(validate(str(spec[key]), f"{path}.{key}"))
    if spec.get("nodeSelector"):
        errs.extend(v.validate_labels(spec["nodeSelector"], f"{path}.nodeSelector"))
    errs.extend(_validate_tolerations(spec.get("tolerations") or [], f"{path}.tolerations"))
    errs.extend(_validate_pod_security_context(spec, f"{path}.securityContext"))
    if spec.get("hostNetwork"):
        for kind in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(kind) or []):
                for j, port in enumerate((c or {}).get("ports") or []):
                    host_port = (port or {}).get("hostPort")
                    if host_port and host_port != port.get("containerPort"):
                        errs.append(v.invalid_value(f"{path}.{kind}[{i}].ports[{j}].containerPort",
                                                    port.get("containerPort"),
                                                    "must match `hostPort` when `hostNetwork` is true"))
    return errs


def validate_pod_template(template: Any, path: str, *, restart_policies: list[str] | None = None,
                          pod_spec: bool = True) -> list[Cause]:
    """ValidatePodTemplateSpec (+ the workload's allowed restart policies). pod_spec=False leaves the pod spec
    unchecked, as upstream's ValidatePodTemplateSpecForStatefulSet does: a StatefulSet's containers mount
    volumes that only its volumeClaimTemplates name."""
    if not isinstance(template, dict):
        return [v.required(path)]
    meta = template.get("metadata") or {}
    errs = v.validate_labels(meta.get("labels"), f"{path}.metadata.labels")
    errs += v.validate_annotations(meta.get("annotations"), f"{path}.metadata.annotations")
    spec = template.get("spec")
    if pod_spec:
        errs += validate_pod_spec(spec, f"{path}.spec")
    restart = (spec or {}).get("restartPolicy")
    refused_already = pod_spec and restart not in RESTART_POLICIES  # by validate_pod_spec
    if restart_policies and restart and restart not in restart_policies and not refused_already:
        errs.append(v.not_supported(f"{path}.spec.restartPolicy", restart, restart_policies))
    return errs


def template_labels(template: Any) -> dict[str, str]:
    return dict(((template or {}).get("metadata") or {}).get("labels") or {})


# --- pod update rules ----------------------------------------------------------------------------

UPDATABLE_POD_SPEC_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)


def validate_pod_spec_update(new: Obj, old: Obj) -> list[Cause]:
    """ValidatePodUpdate's spec rules: only images, a lower activeDeadlineSeconds, added tolerations and
    scheduling gate removals may change."""
    errs: list[Cause] = []
    munged = copy.deepcopy(new)
    for kind in ("containers", "initContainers"):
        new_cs, old_cs = munged.get(kind) or [], old.get(kind) or []
        if len(new_cs) == len(old_cs):
            for nc, oc in zip(new_cs, old_cs, strict=True):
                if isinstance(nc, dict) and isinstance(oc, dict):
                    if not nc.get("image"):
                        errs.append(v.required(f"spec.{kind}[{new_cs.index(nc)}].image"))
                    nc["image"] = oc.get("image")
    new_deadline, old_deadline = new.get("activeDeadlineSeconds"), old.get("activeDeadlineSeconds")
    if new_deadline != old_deadline:
        if old_deadline is not None and new_deadline is None:
            errs.append(v.invalid_value("spec.activeDeadlineSeconds", new_deadline,
                                        "must not update from a positive integer to nil value"))
        elif old_deadline is not None and _int(new_deadline) is not None and new_deadline > old_deadline:
            errs.append(v.invalid_value("spec.activeDeadlineSeconds", new_deadline,
                                        "must be less than or equal to previous value"))
    munged["activeDeadlineSeconds"] = old_deadline
    old_grace = old.get("terminationGracePeriodSeconds")
    if _int(old_grace) is not None and old_grace < 0 and new.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    errs.extend(_validate_added_tolerations(new.get("tolerations") or [], old.get("tolerations") or []))
    munged["tolerations"] = old.get("tolerations")
    new_gates = [g.get("name") for g in new.get("schedulingGates") or []]
    old_gates = [g.get("name") for g in old.get("schedulingGates") or []]
    if all(g in old_gates for g in new_gates):
        munged["schedulingGates"] = old.get("schedulingGates")
    else:
        errs.append(v.forbidden("spec.schedulingGates", "only deletion is allowed, but found new scheduling "
                                                        "gate '" + next(g for g in new_gates if g not in old_gates)
                                + "'"))
        munged["schedulingGates"] = old.get("schedulingGates")
    if _normalised(munged) != _normalised(old):
        errs.append(v.forbidden("spec", "pod updates may not change fields other than "
                                + ",".join(UPDATABLE_POD_SPEC_FIELDS)))
    return errs


def _normalised(spec: Obj) -> Obj:
    """Treat an absent member and null (or an empty list) the same, as Go's typed structs do."""
    return {k: val for k, val in spec.items() if val is not None and val != []}


def _validate_added_tolerations(new: list[Any], old: list[Any]) -> list[Cause]:
    """validateOnlyAddedTolerations: existing tolerations stay, a NoExecute tolerationSeconds may shrink."""
    errs: list[Cause] = []
    for old_tol in old:
        found = False
        for new_tol in new:
            if {k: val for k, val in new_tol.items() if k != "tolerationSeconds"} == \
                    {k: val for k, val in old_tol.items() if k != "tolerationSeconds"}:
                old_secs, new_secs = old_tol.get("tolerationSeconds"), new_tol.get("tolerationSeconds")
                if old_secs is None or (new_secs is not None and new_secs <= old_secs):
                    found = True
                    break
        if not found:
            errs.append(v.forbidden("spec.tolerations", "existing toleration can not be modified except its "
                                                        "tolerationSeconds"))
            break
    errs.extend(_validate_tolerations(new, "spec.tolerations"))
    return errs
