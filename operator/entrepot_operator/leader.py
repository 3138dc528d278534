"""Leader election with a coordination.k8s.io Lease: only the holder reconciles.

kopf's peering only pauses operators of equal priority (both stop), so it does not give
failover; a Lease does. The holder renews every 10 s; a standby takes over a Lease not renewed
for 30 s. A holder that cannot renew exits, and its pod restarts as a standby.
"""

from __future__ import annotations

import datetime
import logging
import os
import time

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("entrepot_operator.leader")
NAME = "entrepot-operator"
DURATION = 30
RENEW = 10


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(self, api: client.ApiClient, *, namespace: str, identity: str) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.identity = identity

    def _try(self) -> bool:
        now = _now()
        try:
            lease = self.leases.read_namespaced_lease(NAME, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=NAME),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=DURATION,
                    renew_time=now,
                    acquire_time=now,
                ),
            )
            try:
                self.leases.create_namespaced_lease(self.namespace, body)
                return True
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        renewed = spec.renew_time
        expired = renewed is None or (now - renewed).total_seconds() > DURATION
        if holder != self.identity and not expired:
            return False
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = DURATION
        if holder != self.identity:
            spec.acquire_time = now
        lease.spec = spec
        try:  # the resourceVersion in `lease` makes this a compare-and-swap
            self.leases.replace_namespaced_lease(NAME, self.namespace, lease)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def acquire(self) -> None:
        log.info("waiting for the lease %s/%s as %s", self.namespace, NAME, self.identity)
        while not self._try():
            time.sleep(RENEW / 2)
        log.info("leading as %s", self.identity)

    def keep(self) -> None:
        while True:
            time.sleep(RENEW)
            try:
                if not self._try():
                    raise RuntimeError("another operator holds the lease")
            except Exception:
                log.exception("lost the lease; exiting so that a standby takes over")
                os._exit(1)
