"""The failure-pattern follower: runs that went wrong -> candidate patterns."""

from .follower import PatternFollower

__all__ = ["PatternFollower"]
