"""The Slack surface: Bolt listeners, Block Kit renderers and the notifier that keeps the incident thread current."""
