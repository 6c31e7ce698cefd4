"""Use cases: one transaction per change — apply, journal, project the rules, enqueue (DESIGN §2)."""

from bridge.provision.membership import split_member_operations
from bridge.provision.preconditions import check_if_match
from bridge.provision.resources import Cause
from bridge.provision.resources import Outcome
from bridge.provision.resources import Provisioner

__all__ = ["Cause", "Outcome", "Provisioner", "check_if_match", "split_member_operations"]
