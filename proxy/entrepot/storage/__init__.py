"""Where artifacts live. Backends implement :class:`entrepot.storage.base.Storage`."""
