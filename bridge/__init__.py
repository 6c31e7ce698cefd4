"""A declarative SCIM 2.0 provisioning bridge from identity providers and HRIS to an LMS."""

__version__ = "0.1.0"
