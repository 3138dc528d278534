"""Download statistics: counted per (ecosystem, package, version, UTC day), kept in SQL."""
