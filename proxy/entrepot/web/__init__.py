"""HTTP plumbing shared by every protocol: responses, error mapping, the access log."""
