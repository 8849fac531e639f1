"""Provider state: small JSON documents a provider or surface keeps between calls, keyed by (kind, key) — a
sandbox's resources, a cloud operation in flight, the Slack message that shows a run, a delivery already handled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from runbooks.store.base import StoreBase
from runbooks.store.tables import jsonable, provider_state


class StateStore(StoreBase):
    def load_state(self, *, kind: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(provider_state.c.value).where(
                provider_state.c.kind == kind, provider_state.c.key == key)).scalar()
        return None if value is None else dict(value)

    def save_state(self, *, kind: str, key: str, value: Mapping[str, Any]) -> None:
        with self.tx() as conn:
            found = conn.execute(sa.select(provider_state.c.key).where(
                provider_state.c.kind == kind, provider_state.c.key == key)).first()
            if found is None:
                conn.execute(provider_state.insert().values(kind=kind, key=key, value=jsonable(value)))
            else:
                conn.execute(provider_state.update().where(
                    provider_state.c.kind == kind, provider_state.c.key == key).values(value=jsonable(value)))

    def delete_state(self, *, kind: str, key: str) -> None:
        with self.tx() as conn:
            conn.execute(provider_state.delete().where(provider_state.c.kind == kind, provider_state.c.key == key))

    def claim_once(self, *, kind: str, key: str, value: Mapping[str, Any]) -> bool:
        """Insert a marker; False if it was already there (a repeated delivery). Atomic across processes."""
        try:
            with self.tx() as conn:
                conn.execute(provider_state.insert().values(kind=kind, key=key, value=jsonable(value)))
        except sa.exc.IntegrityError:
            return False
        return True

    def list_state(self, *, kind: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        q = sa.select(provider_state).where(provider_state.c.kind == kind)
        if prefix:
            q = q.where(provider_state.c.key.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return {r.key: dict(r.value) for r in rows}
