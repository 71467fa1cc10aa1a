"""The visio-sfu server: WebSocket signaling, access tokens, the web client, admin API."""
