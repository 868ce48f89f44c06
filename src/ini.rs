//! INI files with Python 3 `configparser` semantics (stub; being written).
