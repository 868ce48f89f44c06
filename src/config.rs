//! `/etc/default/instance_configs.cfg` (stub; being written).
