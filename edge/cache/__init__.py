"""The edge's result cache: tiers, eviction policy, stored entries."""
