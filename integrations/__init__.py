"""Providers: one package per cloud or service, each implementing `runbooks.ports.Provider` for the resource kinds
it serves and declaring them in `PROVIDES` (a tuple of `runbooks.ports.ProviderSpec`), which `bot.wiring` merges.
`sandbox` is the simulated twin of every cloud, used offline and in tests. Shared pieces: `common` (dispatch,
action vocabulary), `database` (the restore/backup/replica flows over per-cloud hooks), `sdk_errors`
(`map_sdk_errors`), `builders`, `sql` and `integrity` (the post-restore data checks)."""
