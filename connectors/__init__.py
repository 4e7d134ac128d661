"""The edges of nps-sync: CRM connectors and message channels, one folder each (shipped as
``nps_sync.connectors``). See docs/writing-a-connector.md."""
