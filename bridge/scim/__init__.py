"""The inbound SCIM 2.0 HTTP shell (Starlette): routes, parsing, quirks, error rendering."""
