"""Leader election over a coordination.k8s.io/v1 Lease, using kubernetes-asyncio's own leader-election code.

The library runs one election: acquire, renew until a renewal misses ``renew_deadline_s``, then return. This
wrapper keeps a replica in the race for its whole life (re-entering after a loss or an API error, with
backoff), exposes ``is_leader`` as a plain attribute for the publishing loop, and on a clean shutdown clears
the holder so that a follower takes over within one retry period instead of waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kubernetes_asyncio import client
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from lodestar_vllm.integrations.kubernetes.backoff import Backoff

log = logging.getLogger(__name__)


class LeaseElector:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration_s: int = 15,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        backoff: Callable[[], Backoff] = Backoff,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        # The Lease stores whole seconds (the library formats the duration with str() and parses it with int()).
        if int(lease_duration_s) != lease_duration_s:
            raise ValueError(f"lease_duration_s must be a whole number of seconds, got {lease_duration_s}")
        lease_duration_s = int(lease_duration_s)
        # Validated by the library's Config as well; checked here so that a bad value fails at construction.
        electionconfig.Config(
            LeaseLock(name, namespace, identity, api_client), lease_duration_s, renew_deadline_s, retry_period_s,
            onstarted_leading=_never, onstopped_leading=None,  # type: ignore[arg-type]
        )
        self._api_client = api_client
        self._coordination = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._lease_duration_s = lease_duration_s
        self._renew_deadline_s = renew_deadline_s
        self._retry_period_s = retry_period_s
        self._new_backoff = backoff
        self._on_change = on_change
        self.is_leader = False
        self.terms = 0  # how many times this replica became leader
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._lead_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._campaign())

    async def close(self, release: bool = True) -> None:
        """Leave the race. ``release=False`` mimics a crash (the lease then has to expire)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        was_leader = self.is_leader
        self._set_leader(False)
        if release and was_leader:
            await self._release()

    async def _campaign(self) -> None:
        backoff = self._new_backoff()
        while True:
            config = electionconfig.Config(
                LeaseLock(self.name, self.namespace, self.identity, self._api_client),
                self._lease_duration_s,
                self._renew_deadline_s,
                self._retry_period_s,
                onstarted_leading=self._lead,
                onstopped_leading=self._stopped,
            )
            try:
                await leaderelection.LeaderElection(config).run()
                backoff.reset()  # a term ended normally (a renewal missed its deadline)
            except asyncio.CancelledError:
                self._drop_lead_task()
                raise
            except Exception as error:  # API or network failure inside the library: stay in the race
                self.errors += 1
                delay = backoff.next_delay()
                log.warning("lease %s/%s election failed: %r; retrying in %.1f s", self.namespace, self.name,
                            error, delay)
                self._drop_lead_task()
                await asyncio.sleep(delay)
            finally:
                self._set_leader(False)

    async def _lead(self) -> None:
        self._lead_task = asyncio.current_task()
        self.terms += 1
        self._set_leader(True)
        try:
            await asyncio.Event().wait()  # leadership lasts until the library cancels this task
        finally:
            self._set_leader(False)

    async def _stopped(self) -> None:
        self._set_leader(False)

    def _drop_lead_task(self) -> None:
        # When the library raises mid-term it does not cancel the leading task itself.
        task, self._lead_task = self._lead_task, None
        if task is not None and not task.done():
            task.cancel()

    def _set_leader(self, value: bool) -> None:
        if value != self.is_leader:
            self.is_leader = value
            log.info("lease %s/%s: %s %s leadership", self.namespace, self.name, self.identity,
                     "took" if value else "lost")
            if self._on_change is not None:
                self._on_change(value)

    async def _release(self) -> None:
        try:
            lease = await self._coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            # Empty rather than absent: the library treats a falsy holder as free, and a merge-style update
            # would keep an absent field's old value.
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            await self._coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as error:  # best effort: the lease expires on its own anyway
            log.warning("could not release lease %s/%s: %r (it will expire)", self.namespace, self.name, error)


async def _never() -> None:
    return None
