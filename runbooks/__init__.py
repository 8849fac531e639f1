"""drbot's core: incidents, runbook runs, approvals and the timeline. Imports no surface and no cloud SDK.

Public names, by module: `engine.Engine` (the façade: `handle`, `press`, `ingest`, `queries`, `marks`, `start`,
`stop`), `engine.EngineSettings` / `settings.PollPolicy` / `settings.AlertRoute`; `grammar.parse`, `grammar.help_text`
and the command classes (`commands`); `models` (the nouns); `ports` (`Provider`, `Notifier`, `Clock`,
`ProviderSpec`, `ProviderServices`); `catalog.load_catalog`; `readiness.gaps`; `export.export`; `store.Store`
(built only by the composition root); `queries.Queries` / `queries.Marks` (what surfaces read and remember);
`errors` (every refusal drbot says in words). The rest are the engine's services and may change freely.
"""
