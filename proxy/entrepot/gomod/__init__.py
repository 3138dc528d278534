"""The Go module protocol: module paths, versions and their escaped forms."""
