//! Metadata-server emulator (stub; being written).
