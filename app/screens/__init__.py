"""Screens of the srsalvage workstation."""
