"""The rules: functional core that turns SCIM attributes and HR role codes into LMS state."""
