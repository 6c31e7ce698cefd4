"""Inbound bearer-token and signed-JWT verification; authlib lives here only."""
