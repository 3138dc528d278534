"""The npm registry protocol: a verifying, caching mirror of an npm registry.

The pure core, no I/O anywhere:

* :mod:`entrepot.npm.names`: package names (npm's own rules), request paths, storage keys and
  the conventional tarball URL;
* :mod:`entrepot.npm.semver`: SemVer 2.0 parsing and precedence;
* :mod:`entrepot.npm.packument`: the documents served for a package, computed once per upstream
  change (full and abbreviated, gzip, ETags) with the mirror's policy applied;
* :mod:`entrepot.npm.integrity`: SRI strings and the streaming tarball verifier.

Errors they raise, all from :mod:`entrepot.errors`::

    InvalidRequestError   a malformed name, version, tag or request path (400)
    NotFoundError         no such version or tag in a computed document; a name too long
                          for the cache (404)
    VerificationError     upstream bytes that break the rules (502)
    ├── PackumentError    malformed upstream packument JSON       (npm.packument)
    ├── IntegrityError    a tarball whose bytes do not match dist.integrity / dist.shasum,
    │                     or that ended early                      (npm.integrity)
    └── TooLargeError
        ├── PackumentTooLargeError   an upstream packument over the size limit
        └── TarballTooLargeError     a tarball over the size limit, raised as soon as it is
"""
