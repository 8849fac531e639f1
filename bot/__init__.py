"""Surfaces: the CLI and shell (`cli`, `shell`), Slack (`slack`, `http`, `door`, `serve`), PagerDuty webhooks
(`pagerduty`), configuration (`config`, the only reader of environment variables and drbot.yml) and the
composition root (`wiring`). Each talks to the core through `runbooks.engine.Engine` only."""
