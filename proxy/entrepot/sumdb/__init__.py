"""The Go checksum database protocol: signed notes, transparency-log hashes, proofs and tiles."""
