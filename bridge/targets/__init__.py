"""LMS adapters: intent → HTTP request(s) → outcome; one module per LMS kind (DESIGN §7)."""
