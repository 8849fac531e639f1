"""The RPO monitor on a real cloud provider (issue 12's test): RDS on moto server loses its automated backups, the
monitor posts exactly one breach, the backups come back and it posts exactly one recovery; `/metrics` carries the
ages and the targets. Production's wiring builds the `aws-rds` provider (boto3 against moto's endpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, build_config
from bot.slack.metrics import Metrics
from bot.wiring import build_engine
from runbooks.engine import Engine
from tests.doubles.moto_server import REGION, MotoServer, moto_server, seed_rds_source

pytestmark = pytest.mark.slow
SOURCE = "orders-db"


class Said:
    def __init__(self) -> None:
        self.notices: list[str] = []

    def notify(self, event: Any) -> None:
        pass

    def announce(self, notice: Any) -> None:
        self.notices.append(notice.text)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_server() as server:
        yield server


def engine_on(moto: MotoServer, tmp: Path, said: Said) -> Engine:
    data = {"tiers": {"critical": {"rpo": "15m", "rto": "1h"}}, "environments": {"prod": {
        "tier": "critical",
        "database": {"provider": "aws-rds", "instance": SOURCE, "region": REGION, "endpoint_url": moto.url}}}}
    settings = Settings(drbot_database_url=f"sqlite:///{tmp / 'drbot.db'}")
    return build_engine(settings=settings, config=build_config(data, source="test"), notifiers=[said])


def metric(text: str, name: str) -> float | None:
    line = next((line for line in text.splitlines()
                 if line.startswith(f'{name}{{environment="prod",store="database"}} ')), None)
    return None if line is None else float(line.split()[-1])


def test_rds_losing_its_backups_is_one_breach_and_getting_them_back_is_one_recovery(
        moto: MotoServer, tmp_path: Path) -> None:
    seed_rds_source(moto, SOURCE)
    said = Said()
    engine = engine_on(moto, tmp_path, said)
    try:
        [ok] = engine.rpo.scan()
        assert ok.state == "ok" and ok.point is not None and ok.point.what == "latest restorable time"
        assert said.notices == []
        text = Metrics(engine).render()
        age = metric(text, "drbot_recovery_point_age_seconds")
        assert age is not None and age < 15 * 60
        assert metric(text, "drbot_rpo_target_seconds") == 900

        rds = moto.client("rds")
        rds.modify_db_instance(DBInstanceIdentifier=SOURCE, BackupRetentionPeriod=0, ApplyImmediately=True)
        for _ in range(3):
            engine.rpo.scan()
        [breach] = said.notices
        assert breach.startswith(":rotating_light: RPO breach — database of prod: no recovery point")
        assert f"likely cause: automated backups are off for {SOURCE} (backup retention 0 days)" in breach
        text = Metrics(engine).render()
        assert metric(text, "drbot_recovery_point_age_seconds") is None, "no recovery point: no age to export"
        assert engine.rpo.kept()[0].state == "breach"

        rds.modify_db_instance(DBInstanceIdentifier=SOURCE, BackupRetentionPeriod=7, ApplyImmediately=True)
        for _ in range(3):
            engine.rpo.scan()
        assert len(said.notices) == 2
        assert said.notices[1].startswith(":white_check_mark: RPO back within target — database of prod: newest "
                                           "recovery point")
        age = metric(Metrics(engine).render(), "drbot_recovery_point_age_seconds")
        assert age is not None and age < 15 * 60
    finally:
        engine.close()
